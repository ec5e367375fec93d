"""The training split held on the devices: read once before the first step, then each
step gathers its batch there.

Streaming costs the host work on every step: a read on a loader thread, a copy to
the devices, the hand-over. On a 2-core CPU that work competes with the step for
the cores: the 64x64 image-folder benchmark's step ran 13% slower fed by the
loader than by a gather from a split already on the device. So a split that fits
(`RESIDENT_BYTES`, and a quarter of the devices' free memory) is read once, an
image folder's files decoded on the loader's threads, and each step then sends
only the numbers of its rows. The rows are `TrainingOrder`'s, the ones streaming
reads, so a run resumes exactly either way.

With several processes every one streams its own share of each batch instead.
"""

import dataclasses
from collections.abc import Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np

from typedpipe.memory import device_memory
from typedpipe.pipeline.sources import Batch, RecordSource, batches, read_batch
from typedpipe.pipeline.sources.loader import TrainingOrder
from typedpipe.pipeline.train.sharding import Placement
from typedpipe.progress import track

#: The most device memory a resident training split may take: this, or a quarter of
#: what the device has free, whichever is less.
RESIDENT_BYTES = 2**30

# Records read per loader call while loading the split.
_READ_CHUNK = 256


@dataclasses.dataclass(frozen=True)
class ResidentSplit:
    """A split's images and labels on the host, in split order, and replicated on the
    devices; `row_of[i]` is record i's row (-1: not in the split)."""

    images: np.ndarray
    labels: np.ndarray
    on_devices: tuple[jax.Array, jax.Array]
    row_of: np.ndarray

    @classmethod
    def load(
        cls, records: RecordSource, indices: np.ndarray, placement: Placement
    ) -> "ResidentSplit | None":
        """Read `records[indices]` and put them on the devices, or None where they would not
        fit the budget (checked from one record, before the rest are read) or several
        processes train.

        Raises:
            ContractError: a record no longer reads as surveyed, as streaming would.
        """
        indices = np.asarray(indices)
        if jax.process_count() > 1 or len(indices) == 0:
            return None
        image, label = read_batch(records, indices[:1])
        size = len(indices) * (image[0].nbytes + label[0].nbytes)
        if size > min(RESIDENT_BYTES, free_device_bytes(placement) // 4):
            return None
        images = np.empty((len(indices), *image.shape[1:]), image.dtype)
        labels = np.empty((len(indices), *label.shape[1:]), label.dtype)
        done = 0
        chunks = batches(records, indices, _READ_CHUNK, shard=(0, 1))
        total = -(-len(indices) // _READ_CHUNK)
        for batch in track(chunks, "loading the training split", total=total, every=1):
            count = int(batch.mask.sum())  # the last chunk is padded
            images[done : done + count] = batch.images[:count]
            labels[done : done + count] = batch.labels[:count]
            done += count
        row_of = np.full(len(records), -1, np.int32)  # the step's index type: no conversion
        row_of[indices] = np.arange(len(indices))
        on_devices = jax.device_put((images, labels), placement.replicated)
        return cls(images, labels, on_devices, row_of)

    def feeds(self, order: TrainingOrder, start: int, stop: int) -> Iterator[tuple[Batch, tuple]]:
        """For steps `start` to `stop`: the host batch (what callbacks see) and the
        arguments of the `gathering` step after the state."""
        for step in range(start, stop):
            rows = self.row_of[order.rows(step)]
            batch = Batch(self.images[rows], self.labels[rows], np.ones(len(rows), bool))
            # The rows stay a NumPy array: the jitted step places them itself, in a
            # fraction of device_put's time (28 against 124 us a step, measured).
            yield batch, (*self.on_devices, rows)


def gathering(train_step: Callable, placement: Placement) -> Callable:
    """`train_step(state, batch, key)` jitted as `step(state, images, labels, rows, key)`,
    its batch gathered from a resident split's `rows` on the devices; the state is
    donated."""

    def step(state, images: jax.Array, labels: jax.Array, rows: jax.Array, key: jax.Array):
        batch = Batch(images[rows], labels[rows], jnp.ones(rows.shape, bool))
        return train_step(state, batch, key)

    whole, split = placement.replicated, placement.batch_sharding
    return jax.jit(
        step,
        donate_argnums=0,
        in_shardings=(whole, whole, whole, split, whole),
        out_shardings=whole,
    )


def free_device_bytes(placement: Placement) -> int:
    """Memory free on the placement's first device; for a CPU device, the host's available."""
    return device_memory(placement.mesh.devices.flat[0], free=True)[0]
