"""The callbacks a training run is made of: the numeric guard, history and checkpoints."""

import collections
import dataclasses
import json
from pathlib import Path

import jax
import jax.numpy as jnp

from typedpipe.contracts import Diagnostic, TrainingStopped
from typedpipe.files import write_atomic
from typedpipe.models import Classifier
from typedpipe.pipeline.sources import Batch
from typedpipe.pipeline.stages import Preprocess
from typedpipe.pipeline.train.checkpoint import Checkpoints
from typedpipe.pipeline.train.loop import Callback, EpochStats, Loop
from typedpipe.pipeline.train.step import Metrics, Train

# Reading the guard's counters waits for the device; do it every few steps.
CHECK_EVERY = 10


class NumericGuard(Callback):
    """Stop on non-finite steps as the config says; the weights stay the last finite ones.

    The step itself drops a non-finite update (see `numerics`). This reads the
    counters every `every` steps and, past `max_consecutive` skips in a row (or at
    the first with `stop_at_first`), raises `TrainingStopped` naming the first
    layer whose output went non-finite on a recent batch.

    Step s's counters are read from its metrics after step s + 1 is queued, so the
    devices do not idle while the host reads: waiting for step s's state instead
    cost the digits run 10% of its speed. The last step's are read at once.
    """

    def __init__(
        self, train: Train, *, max_consecutive: int, stop_at_first: bool, every: int = CHECK_EVERY
    ):
        self.train, self.max_consecutive, self.stop_at_first = train, max_consecutive, stop_at_first
        self.every = every
        # The batches up to a checked step, and the one queued after it.
        self.recent: collections.deque[Batch] = collections.deque(maxlen=every + 1)
        self.due: Metrics | None = None  # a checked step's metrics, read one step late

    def on_step_end(self, loop: Loop, batch: Batch, metrics: Metrics) -> None:
        self.recent.append(batch)
        if self.due is not None:
            self.judge(loop, self.due)
            self.due = None
        if loop.step >= loop.total_steps:
            self.judge(loop, metrics)
        elif loop.step % self.every == 0:
            self.due = metrics

    def on_epoch_end(self, loop: Loop, stats: EpochStats) -> None:
        self.due = None  # the state is newer, and the epoch's end has waited for it
        self.judge(
            loop, {"skipped": loop.state.skipped, "consecutive_skips": loop.state.consecutive_skips}
        )

    def judge(self, loop: Loop, counters: Metrics) -> None:
        skipped = int(counters["skipped"])
        consecutive = int(counters["consecutive_skips"])
        if skipped == 0 or not (self.stop_at_first or consecutive > self.max_consecutive):
            return
        # On the host: a state replicated over several processes cannot run eagerly.
        model = self.train.model(jax.device_get(loop.state))
        culprits = [
            first_nonfinite_layer(model, jnp.asarray(b.images), self.train.preprocess)
            for b in self.recent
        ]
        layer = next((c for c in culprits if not c.startswith("the backward")), culprits[-1])
        raise TrainingStopped(
            Diagnostic(
                "numeric.nonfinite",
                f"training produced NaN/inf ({skipped} step(s) skipped, "
                f"{consecutive} in a row); first non-finite layer: {layer}",
                stage=layer,
                expected="finite loss, gradients and weights",
                got="NaN/inf",
                hint="lower [train] learning_rate, keep clip_global_norm set, check the data for "
                'NaN/inf (typedpipe check), or use precision = "float32"',
            )
        )


def first_nonfinite_layer(model: Classifier, images: jax.Array, preprocess: Preprocess) -> str:
    """Run `images` eagerly layer by layer; the first layer whose output is non-finite."""
    x = preprocess(images, train=False)
    if not bool(jnp.isfinite(x).all()):
        return "preprocess (the input batch)"
    for layer in model.layers:
        x = layer(x)
        if not bool(jnp.isfinite(x).all()):
            return layer.name
    return "the backward pass (gradients or the update; every forward output is finite)"


class History(Callback):
    """`history.jsonl`: one line per finished epoch, rewritten atomically after each
    (kept in memory only, without a path)."""

    def __init__(self, path: Path | None, previous: list[dict] | None = None):
        self.path, self.lines = path, list(previous or [])

    def on_epoch_end(self, loop: Loop, stats: EpochStats) -> None:
        self.lines = [h for h in self.lines if h["epoch"] < stats.epoch]
        self.lines.append(dataclasses.asdict(stats))
        if self.path is not None:
            write_atomic(self.path, "".join(json.dumps(h) + "\n" for h in self.lines))


class Checkpointing(Callback):
    """An Orbax checkpoint after every epoch and where training stops, whatever stops it."""

    def __init__(self, checkpoints: Checkpoints):
        self.checkpoints = checkpoints

    def on_epoch_end(self, loop: Loop, stats: EpochStats) -> None:
        self.checkpoints.save(loop.step, loop.state)

    def on_train_end(self, loop: Loop) -> None:
        self.checkpoints.save(loop.step, loop.state)


class StopAfter(Callback):
    """Stop once `steps` steps have run in this `fit` call."""

    def __init__(self, steps: int):
        self.steps, self.start = steps, 0

    def on_train_start(self, loop: Loop) -> None:
        self.start = loop.step

    def on_step_end(self, loop: Loop, batch: Batch, metrics: Metrics) -> None:
        loop.should_stop = loop.should_stop or loop.step - self.start >= self.steps
