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

from typedpipe.contracts.enforce import unchecked
from typedpipe.pipeline.config import parse_config
from typedpipe.pipeline.train import Trainer

WORKLOADS = {
    "small_cnn 8x8x1 b64": ("small_cnn", (8, 8, 1), 64),
    "resnet20 32x32x3 b128": ("resnet20", (32, 32, 3), 128),
}


def _trainer(name, shape, batch):
    config = parse_config(
        f'[model]\nname = "{name}"\ninput = {list(shape)}\n'
        f"num_classes = 10\n[train]\nbatch_size = {batch}\n"
    )
    return Trainer(config, "int", steps_per_epoch=100)


def _step_seconds(trainer, images, labels, key, steps):
    """Median seconds per step after the first (compiling) call."""
    trainer.state, metrics = trainer.train_step(trainer.state, images, labels, key)
    jax.block_until_ready(metrics)
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        trainer.state, metrics = trainer.train_step(trainer.state, images, labels, key)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _compile_seconds(trainer, images, labels, key):
    started = time.perf_counter()
    trainer.train_step.lower(trainer.state, images, labels, key).compile()
    return time.perf_counter() - started


def run(steps: int = 30, rounds: int = 3) -> list[dict]:
    results = []
    for label, (name, shape, batch) in WORKLOADS.items():
        rng = np.random.default_rng(0)
        images = jax.device_put(rng.random((batch, *shape), dtype=np.float32))
        labels = jax.device_put(rng.integers(0, 10, batch).astype(np.int32))
        key = jax.random.key(0)
        checked = _trainer(name, shape, batch)
        with unchecked():
            plain = _trainer(name, shape, batch)
            plain_compile = _compile_seconds(plain, images, labels, key)
        checked_compile = _compile_seconds(checked, images, labels, key)
        per_step = {"checked": [], "unchecked": []}
        for _ in range(rounds):
            per_step["checked"].append(_step_seconds(checked, images, labels, key, steps))
            with unchecked():
                per_step["unchecked"].append(_step_seconds(plain, images, labels, key, steps))
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
