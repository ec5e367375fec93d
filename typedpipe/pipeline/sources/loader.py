"""The one loader: Grain shuffles, shards, batches and prefetches every source's records.

Training, evaluation and `bench` all read through `batches`. What it yields is a
pure function of (seed, epoch, position): a run stopped at any step resumes on
exactly the batches it would have seen, by skipping whole batches of indices
(nothing is read for them).
"""

import dataclasses
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
        shuffle_seed: shuffle each epoch (and drop the last partial batch, so
            every step has one shape); None reads in order and pads the last
            batch, its padding rows masked out.
        epoch: which epoch's order.
        skip: batches of this epoch already consumed (resuming mid-epoch).
        shard: (this process, process count); default `jax.process_index()` of
            `jax.process_count()`.

    Example:
        >>> records = ArrayRecords(np.arange(10)[:, None, None, None], np.arange(10))
        >>> [b.mask.sum() for b in batches(records, np.arange(10), 4)]
        [4, 4, 2]
    """
    import grain

    index, count = shard or (jax.process_index(), jax.process_count())
    per_process = batch_size // count
    dataset = grain.MapDataset.source(np.asarray(indices))
    if shuffle_seed is not None:
        dataset = dataset.shuffle(seed=epoch_seed(shuffle_seed, epoch))
    # Each process takes its rows of every global batch, so that the global batch is
    # the same, in the same order, on any number of processes.
    mine = slice(index * per_process, (index + 1) * per_process)
    dataset = dataset.batch(batch_size, drop_remainder=shuffle_seed is not None)[skip:]
    filler = np.asarray(indices[:1])  # pads a short batch; its rows are masked out

    def read(batch_indices: np.ndarray) -> Batch:
        chosen = batch_indices[mine]
        real = len(chosen)
        padded = np.concatenate([chosen, np.repeat(filler, per_process - real)])
        images, labels = read_batch(records, padded)
        return Batch(images, labels, np.arange(per_process) < real)

    threads = getattr(records, "read_threads", 1)
    options = grain.ReadOptions(num_threads=threads, prefetch_buffer_size=PREFETCH * threads)
    yield from dataset.map(read).to_iter_dataset(options)
