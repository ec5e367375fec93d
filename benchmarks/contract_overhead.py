"""Do the contracts cost anything per step? The same jitted train step, checked and unchecked.

Both variants are built and timed in one process, interleaved round by round so
that machine noise hits them alike. Contracts run while JAX traces, so the
expectation is: a little more trace/compile time, identical time per step.
"""

import dataclasses
import statistics
import time

import jax
import numpy as np

from typedpipe import make_train, parse_config
from typedpipe.contracts import unchecked
from typedpipe.pipeline.sources import Batch

WORKLOADS = {
    "small_cnn 8x8x1 b64": ("small_cnn", (8, 8, 1), 64),
    "resnet20 32x32x3 b128": ("resnet20", (32, 32, 3), 128),
}


class _Trainer:
    """The jitted train step `fit` runs (`make_train`), with the state it carries."""

    def __init__(self, name, shape, batch):
        config = parse_config(
            f'[model]\nname = "{name}"\ninput = {list(shape)}\n'
            f"num_classes = 10\n[train]\nbatch_size = {batch}\n"
        )
        train = make_train(config, "int", steps_per_epoch=100)
        self.state = jax.jit(train.init_state)(jax.random.key(0))
        self.train_step = jax.jit(train.train_step, donate_argnums=0)


def _step_seconds(trainer, batch, key, steps):
    """Median seconds per step after the first (compiling) call."""
    trainer.state, metrics = trainer.train_step(trainer.state, batch, key)
    jax.block_until_ready(metrics)
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        trainer.state, metrics = trainer.train_step(trainer.state, batch, key)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _compile_seconds(trainer, batch, key):
    started = time.perf_counter()
    trainer.train_step.lower(trainer.state, batch, key).compile()
    return time.perf_counter() - started


def run(steps: int = 30, rounds: int = 3) -> list[dict]:
    results = []
    for label, (name, shape, batch) in WORKLOADS.items():
        rng = np.random.default_rng(0)
        data = Batch(
            rng.random((batch, *shape), dtype=np.float32),
            rng.integers(0, 10, batch).astype(np.int32),
            np.ones(batch, bool),
        )
        data = jax.device_put(data)
        key = jax.random.key(0)
        checked = _Trainer(name, shape, batch)
        with unchecked():
            plain = _Trainer(name, shape, batch)
            plain_compile = _compile_seconds(plain, data, key)
        checked_compile = _compile_seconds(checked, data, key)
        per_step = {"checked": [], "unchecked": []}
        for _ in range(rounds):
            per_step["checked"].append(_step_seconds(checked, data, key, steps))
            with unchecked():
                per_step["unchecked"].append(_step_seconds(plain, data, key, steps))
        checked_ms = 1e3 * min(per_step["checked"])
        plain_ms = 1e3 * min(per_step["unchecked"])
        results.append(
            dataclasses.asdict(
                Result(
                    workload=label,
                    checked_step_ms=round(checked_ms, 3),
                    unchecked_step_ms=round(plain_ms, 3),
                    step_ratio=round(checked_ms / plain_ms, 3),
                    checked_trace_compile_s=round(checked_compile, 3),
                    unchecked_trace_compile_s=round(plain_compile, 3),
                    images_per_second_checked=round(batch / (checked_ms / 1e3), 1),
                )
            )
        )
    return results


@dataclasses.dataclass
class Result:
    workload: str
    checked_step_ms: float
    unchecked_step_ms: float
    step_ratio: float
    checked_trace_compile_s: float
    unchecked_trace_compile_s: float
    images_per_second_checked: float
