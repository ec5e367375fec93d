"""`fit`: the training loop, and the callbacks that watch it.

The loop only moves batches to the devices and calls the jitted step; what
happens around it (progress, history, checkpoints, the numeric guard) is a
`Callback`. Every decision about the next step lives in the `TrainState`, so a
run restored from a checkpoint continues exactly where it stopped: the epoch
and the position in it follow from `state.step`, and the loader replays the
same data order from the seed.
"""

import collections
import contextlib
import dataclasses
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence

import jax
import numpy as np
from jaxtyping import PRNGKeyArray

from typedpipe.files import failpoint
from typedpipe.pipeline.sources import Batch, RecordSource, Splits, batches, training_batches
from typedpipe.pipeline.sources.loader import TrainingOrder
from typedpipe.pipeline.train.resident import ResidentSplit, gathering
from typedpipe.pipeline.train.sharding import Placement
from typedpipe.pipeline.train.state import TrainState
from typedpipe.pipeline.train.step import Metrics, Train


@dataclasses.dataclass(frozen=True)
class EpochStats:
    """One line of `history.jsonl`. A value that does not exist (no val split) is None."""

    epoch: int
    train_loss: float | None
    train_accuracy: float | None
    val_loss: float | None
    val_accuracy: float | None
    seconds: float
    skipped_steps: int


@dataclasses.dataclass
class Loop:
    """What callbacks see: the state, where the run is, and how to stop it."""

    state: TrainState
    step: int  # the host's copy of state.step (no device sync to read it)
    epoch: int  # 0-based epoch of the current step
    steps_per_epoch: int
    total_steps: int
    batch_size: int
    should_stop: bool = False  # set by a callback to end training after this step
    interrupted: bool = False  # Ctrl-C: training ends after this step, callbacks run
    timed_steps: int = 0  # steps timed for throughput (the compiling first one is not)
    timed_seconds: float = 0.0


class Interrupted(KeyboardInterrupt):
    """Ctrl-C ended training after a whole step; the callbacks (checkpoints) have run."""

    def __init__(self, step: int):
        super().__init__(f"interrupted after step {step}")
        self.step = step


@contextlib.contextmanager
def _finish_step_on_interrupt(loop: Loop) -> Iterator[None]:
    """The first Ctrl-C stops training after the step in flight; a second stops at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)

    def stop(signum, frame):
        if loop.interrupted:
            raise KeyboardInterrupt
        loop.interrupted = loop.should_stop = True

    signal.signal(signal.SIGINT, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class Callback:
    """Hooks around training; override the ones you need. Each may set `loop.should_stop`.

    Reading a device value (a metric, a state counter) waits for the device:
    do it every few steps, not every step.

    Example:
        >>> class StopAt(Callback):
        ...     def on_step_end(self, loop, batch, metrics):
        ...         loop.should_stop = loop.step >= 100
    """

    def on_train_start(self, loop: Loop) -> None:
        """Before the first step (of this invocation: after a restore, `loop.step` > 0)."""

    def on_step_end(self, loop: Loop, batch: Batch, metrics: Metrics) -> None:
        """After each step; `batch` is the host batch the step consumed."""

    def on_epoch_end(self, loop: Loop, stats: EpochStats) -> None:
        """After the last step of an epoch and its validation."""

    def on_train_end(self, loop: Loop) -> None:
        """After the last step, however training ended (also when a callback raised)."""


@dataclasses.dataclass(frozen=True)
class Throughput:
    """Steps timed after the first (which includes compilation) in one `fit` call."""

    steps: int = 0
    seconds: float = 0.0
    images: int = 0

    @property
    def images_per_second(self) -> float | None:
        return self.images / self.seconds if self.seconds > 0 else None


def fit(
    train: Train,
    state: TrainState,
    records: RecordSource,
    splits: Splits,
    *,
    batch_size: int,
    epochs: int,
    seed: int,
    key: PRNGKeyArray,
    placement: Placement | None = None,
    callbacks: Sequence[Callback] = (),
    max_steps: int | None = None,
) -> tuple[TrainState, Throughput]:
    """Train from `state` until `epochs` are done, `max_steps` steps are taken, or a
    callback stops it.

    Args:
        train: the training functions (`make_train`).
        state: where to start; a restored state resumes mid-epoch exactly.
        records: every record of the source; `splits` says which are train and val.
        batch_size: the global batch size.
        epochs: the run's total epochs (not this call's).
        seed: the data order's seed.
        key: the base key; each step uses `fold_in(key, state.step)`.
        placement: the devices; default one device.
        callbacks: progress, history, checkpoints, the numeric guard, your own.
        max_steps: stop once `state.step` reaches this.

    Returns:
        The final state, and the throughput of the steps after the first.

    Raises:
        Interrupted: Ctrl-C, after the step in flight and the callbacks' `on_train_end`.
    """
    placement = placement or Placement(devices=1)
    steps_per_epoch = len(splits.train) // batch_size
    total = (
        steps_per_epoch * epochs if max_steps is None else min(max_steps, steps_per_epoch * epochs)
    )
    eval_fn = jax.jit(train.eval_step, out_shardings=placement.replicated)
    state = placement.replicate(state)
    start = int(state.step)
    loop = Loop(state, start, start // max(steps_per_epoch, 1), steps_per_epoch, total, batch_size)
    step_fn, feeds = _feeding(train, records, splits.train, seed, loop, placement)
    for callback in callbacks:
        callback.on_train_start(loop)
    with _finish_step_on_interrupt(loop):
        _run(train, loop, records, splits, key, placement, callbacks, step_fn, feeds, eval_fn)
    if loop.interrupted:
        raise Interrupted(loop.step)
    return loop.state, Throughput(
        loop.timed_steps, loop.timed_seconds, loop.timed_steps * batch_size
    )


def _feeding(
    train: Train, records, indices, seed: int, loop: Loop, placement: Placement
) -> tuple[Callable, Iterator[tuple[Batch, tuple]]]:
    """The jitted step, and for each step from `loop.step` on, the host batch and the
    step's arguments after the state: a split that fits on the devices is read once and
    gathered there (`ResidentSplit`), any other is streamed one pipeline for all epochs.
    """
    start, stop = loop.step, loop.total_steps
    resident = ResidentSplit.load(records, indices, placement) if start < stop else None
    if resident is not None:
        order = TrainingOrder(indices, loop.batch_size, seed)
        return gathering(train.train_step, placement), resident.feeds(order, start, stop)
    host_batches = training_batches(
        records, indices, loop.batch_size, seed=seed, start=start, stop=stop
    )
    feeds = ((batch, (on_devices,)) for batch, on_devices in _ahead(host_batches, placement))
    # Replicated results: every process can read the state and the metrics.
    step = jax.jit(train.train_step, donate_argnums=0, out_shardings=placement.replicated)
    return step, feeds


def _run(train, loop: Loop, records, splits, key, placement, callbacks, step_fn, feeds, eval_fn):
    """The steps of `fit`, from `loop.step` on."""
    start, steps_per_epoch = loop.step, loop.steps_per_epoch
    epoch_started = time.perf_counter()
    clock, paused = epoch_started, 0.0  # the timed steps start after the first one compiled
    try:
        for batch, arguments in feeds:
            loop.epoch = loop.step // steps_per_epoch
            loop.state, metrics = step_fn(loop.state, *arguments, key)
            loop.step += 1
            failpoint("step")
            if loop.step == start + 1:
                jax.block_until_ready(metrics)
                clock = time.perf_counter()
            for callback in callbacks:
                callback.on_step_end(loop, batch, metrics)
            if loop.step % steps_per_epoch == 0:  # validation and checkpoints are not timed
                jax.block_until_ready(loop.state.step)
                pause_started = time.perf_counter()
                stats = _epoch_stats(
                    train, loop, records, splits.val, eval_fn, placement, epoch_started
                )
                for callback in callbacks:
                    callback.on_epoch_end(loop, stats)
                epoch_started = time.perf_counter()
                paused += epoch_started - pause_started
            if loop.should_stop:
                break
        jax.block_until_ready(loop.state.step)
        if loop.step > start + 1:
            loop.timed_steps += loop.step - start - 1
            loop.timed_seconds += time.perf_counter() - clock - paused
    finally:
        for callback in callbacks:
            callback.on_train_end(loop)


def _ahead(host_batches: Iterator[Batch], placement: Placement, depth: int = 2):
    """(host batch, device batch) pairs, `depth` of them already on the devices: the
    copy of the next batch overlaps the step in flight."""
    queue: collections.deque = collections.deque()
    for batch in host_batches:
        queue.append((batch, placement.put(batch)))
        if len(queue) > depth:
            yield queue.popleft()
    yield from queue


def _epoch_stats(
    train, loop: Loop, records, val_indices, eval_fn, placement, started
) -> EpochStats:
    """The epoch's training sums (kept on the devices), its validation, and its seconds."""
    sums = jax.device_get(loop.state.epoch)
    val = evaluate(train, loop.state, records, val_indices, loop.batch_size, placement, eval_fn)
    return EpochStats(
        epoch=loop.step // loop.steps_per_epoch,
        train_loss=float(sums.loss / sums.finite_steps) if sums.finite_steps else None,
        train_accuracy=float(sums.correct / sums.images) if sums.images else None,
        val_loss=val["loss"],
        val_accuracy=val["accuracy"],
        seconds=round(time.perf_counter() - started, 3),
        skipped_steps=int(loop.state.skipped),
    )


def evaluate(
    train: Train,
    state: TrainState,
    records: RecordSource,
    indices: np.ndarray,
    batch_size: int,
    placement: Placement | None = None,
    eval_fn=None,
) -> dict:
    """Accuracy, mean loss and predictions over `records[indices]`, each counted once.

    A split without records has no accuracy and no loss: both are None.
    """
    placement = placement or Placement(devices=1)
    eval_fn = eval_fn or jax.jit(train.eval_step, out_shardings=placement.replicated)
    predictions, loss_sum, correct = [], 0.0, 0
    for batch in batches(records, indices, batch_size, shard=(0, 1)):
        out = jax.device_get(eval_fn(state, placement.put(batch, process_local=False)))
        predictions.append(out["predictions"][batch.mask])
        loss_sum += float(out["loss_sum"])
        correct += int(out["correct"])
    count = len(indices)
    return {
        "accuracy": correct / count if count else None,
        "loss": loss_sum / count if count else None,
        "predictions": np.concatenate(predictions) if predictions else np.zeros(0, np.int64),
    }
