"""The one loader: every source's records, batched, sharded per process, and read
ahead on Grain's threads.

Training reads through `training_batches`, evaluation through `batches`. What
they yield is a pure function of (seed, epoch, position): each epoch's order is
one permutation drawn from (seed, epoch), so a run stopped at any step resumes on
exactly the batches it would have seen, starting at that step (nothing is read
for the steps before it).
"""

import dataclasses
import functools
from collections.abc import Iterator
from typing import Any

import jax
import numpy as np

from typedpipe.pipeline.sources.base import RecordSource, read_batch

#: Batches read ahead of the one the device is working on.
PREFETCH = 2


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Batch:
    """Images as stored, their labels, and which rows are real (False: padding)."""

    # NumPy arrays on the host, jax.Arrays on the devices, ShapeDtypeStructs in the preflight.
    images: Any
    labels: Any
    mask: Any


def epoch_seed(seed: int, epoch: int) -> int:
    """The shuffle seed of one epoch: every epoch its own order, reproducible from the seed."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def batches(
    records: RecordSource,
    indices: np.ndarray,
    batch_size: int,
    *,
    shuffle_seed: int | None = None,
    epoch: int = 0,
    skip: int = 0,
    shard: tuple[int, int] | None = None,
) -> Iterator[Batch]:
    """Batches of `records[indices]`, read on Grain threads ahead of use.

    Args:
        records: any random-access record source.
        indices: which records (a split).
        batch_size: the global batch; each of `shard`'s processes reads its share.
        shuffle_seed: one epoch of `training_batches`; None reads in order and
            pads the last batch, its padding rows masked out (evaluation).
        epoch: which epoch's order.
        skip: batches of this epoch already consumed (resuming mid-epoch).
        shard: (this process, process count); default `jax.process_index()` of
            `jax.process_count()`.

    Example:
        >>> from typedpipe.pipeline.sources import ArrayRecords
        >>> records = ArrayRecords(np.arange(10)[:, None, None, None], np.arange(10))
        >>> [int(b.mask.sum()) for b in batches(records, np.arange(10), 4)]
        [4, 4, 2]
    """
    if shuffle_seed is not None:
        per_epoch = len(indices) // batch_size
        start, stop = epoch * per_epoch + skip, (epoch + 1) * per_epoch
        return training_batches(
            records, indices, batch_size, seed=shuffle_seed, start=start, stop=stop, shard=shard
        )
    import grain

    indices = np.asarray(indices)

    def read(position: int) -> Batch:
        rows = indices[position * batch_size : (position + 1) * batch_size]
        return _read_rows(records, rows, batch_size, shard)

    count = -(-len(indices) // batch_size)

    return iter(grain.MapDataset.range(count).map(read).to_iter_dataset(_options(records)))


class TrainingOrder:
    """Which records each training step reads, across epochs.

    Step s takes batch s % (steps per epoch) of epoch s // (steps per epoch), each
    epoch in its own order, a permutation drawn from `epoch_seed(seed, epoch)`.
    The last partial batch of an epoch is dropped, so that every step has one shape.
    """

    def __init__(self, indices: np.ndarray, batch_size: int, seed: int):
        self.indices, self.batch_size, self.seed = np.asarray(indices), batch_size, seed
        self.steps_per_epoch = len(self.indices) // batch_size
        # One permutation per epoch, drawn once: looking each row up through a shuffled
        # Grain dataset costs tens of microseconds a row, more than a small step.
        self._order = functools.lru_cache(maxsize=2)(self._draw)  # this epoch, and the next

    def _draw(self, epoch: int) -> np.ndarray:
        return np.random.default_rng(epoch_seed(self.seed, epoch)).permutation(self.indices)

    def rows(self, step: int) -> np.ndarray:
        """The records of step `step`'s global batch."""
        epoch, position = divmod(step, self.steps_per_epoch)
        return self._order(epoch)[position * self.batch_size : (position + 1) * self.batch_size]


def training_batches(
    records: RecordSource,
    indices: np.ndarray,
    batch_size: int,
    *,
    seed: int,
    start: int,
    stop: int,
    shard: tuple[int, int] | None = None,
) -> Iterator[Batch]:
    """The batches of training steps `start` to `stop` (`TrainingOrder`), across epochs,
    in one Grain pipeline: it keeps reading ahead while an epoch ends (validation,
    checkpoints)."""
    import grain

    order = TrainingOrder(indices, batch_size, seed)

    def read(step: int) -> Batch:
        return _read_rows(records, order.rows(step), batch_size, shard)

    steps = grain.MapDataset.range(start, stop).map(read)
    return iter(steps.to_iter_dataset(_options(records)))


def _read_rows(
    records: RecordSource, rows: np.ndarray, batch_size: int, shard: tuple[int, int] | None
) -> Batch:
    """This process's rows of one global batch; a short (last) batch is padded with the
    first row, its padding masked out."""
    index, count = shard or (jax.process_index(), jax.process_count())
    per_process = batch_size // count
    # Each process takes its rows of every global batch, so that the global batch is
    # the same, in the same order, on any number of processes.
    mine = rows[index * per_process : (index + 1) * per_process]
    padded = np.concatenate([mine, np.repeat(rows[:1], per_process - len(mine))])
    images, labels = read_batch(records, padded)
    return Batch(images, labels, np.arange(per_process) < len(mine))


def _options(records: RecordSource):
    import grain

    # Records in memory (no `read_threads`) are read on the calling thread: a fancy
    # index costs microseconds, and a reader thread would fight the step for the cores.
    threads = getattr(records, "read_threads", 0)
    return grain.ReadOptions(num_threads=threads, prefetch_buffer_size=PREFETCH * threads)
