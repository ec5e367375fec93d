"""`typedpipe bench`: the train step's compile time, speed and memory, on random data of the spec.

The batch is drawn on the host to match what the configured source would yield
(shape, dtype, value range), so the numbers are the step's and not the loader's.
The step is the one `fit` runs (`make_train`), jitted the same way.
"""

import time

import jax
import numpy as np

from typedpipe.contracts import ContractError
from typedpipe.pipeline.check import check_pipeline, errors
from typedpipe.pipeline.check.preflight import compiled_bytes
from typedpipe.pipeline.config import Config
from typedpipe.pipeline.sources import Batch
from typedpipe.pipeline.train.sharding import Placement
from typedpipe.pipeline.train.step import make_train


def bench_step(config: Config, steps: int = 50, devices: int = 1) -> dict:
    """Compile the train step, run it `steps` times, and report what it cost.

    Raises:
        ContractError: the config does not pass `check`.
    """
    survey = config.source().survey()
    found = errors(check_pipeline(config, survey, devices=devices))
    if found:
        raise ContractError(found)
    spec = survey.spec
    if spec is None:  # only a faulted survey has no spec, and check found no fault
        raise ContractError(survey.diagnostics)
    placement = Placement(devices)
    train = make_train(config, survey.label_spec.format, steps_per_epoch=steps)
    key = jax.random.key(config.seed)
    state = placement.replicate(jax.jit(train.init_state)(key))
    rng = np.random.default_rng(config.seed)
    batch_size = config.train.batch_size
    lo, hi = spec.value_range or (0.0, 1.0)
    shape = (batch_size, *spec.shape)
    if spec.is_float:
        images = rng.uniform(lo, hi, shape).astype(spec.dtype)
    else:
        images = rng.integers(int(lo), int(hi) + 1, shape).astype(spec.dtype)
    labels = survey.labels[rng.integers(0, len(survey.labels), batch_size)]
    batch = placement.put(Batch(images, labels, np.ones(batch_size, bool)))

    step = jax.jit(train.train_step, donate_argnums=0)
    started = time.perf_counter()
    compiled = step.lower(state, batch, key).compile()
    compile_seconds = time.perf_counter() - started
    state, metrics = compiled(state, batch, key)  # warm up
    jax.block_until_ready(metrics)
    started = time.perf_counter()
    for _ in range(steps):
        state, metrics = compiled(state, batch, key)
    jax.block_until_ready((state, metrics))
    seconds = time.perf_counter() - started
    device = jax.devices()[0]
    return {
        "model": config.model.name,
        "input": list(spec.shape),
        "batch_size": batch_size,
        "precision": config.train.precision,
        "steps": steps,
        "compile_seconds": round(compile_seconds, 3),
        "step_ms": round(1000 * seconds / steps, 3),
        "images_per_second": round(batch_size * steps / seconds, 1),
        "step_memory_bytes": compiled_bytes(compiled),
        "backend": device.platform,
        "device_kind": device.device_kind,
        "devices": devices,
    }
