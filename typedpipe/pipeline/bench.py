"""`typedpipe bench`: the train and inference steps' compile time, speed, FLOP/s and memory,
on random data of the spec.

The batch is drawn on the host to match what the configured source would yield
(shape, dtype, value range), so the numbers are the step's and not the loader's.
The steps are the ones `fit` and `evaluate` run (`make_train`), jitted the same way.
FLOPs are XLA's own count for the compiled step (its cost analysis).
"""

import time

import jax
import numpy as np

from typedpipe.contracts import ContractError
from typedpipe.pipeline.check import check_pipeline, errors
from typedpipe.pipeline.check.preflight import compiled_bytes
from typedpipe.pipeline.config import Config
from typedpipe.pipeline.sources import Batch
from typedpipe.pipeline.train.sharding import Placement, default_devices
from typedpipe.pipeline.train.step import make_train


def bench_step(config: Config, steps: int = 50, devices: int | None = None) -> dict:
    """Compile the train step, run it `steps` times, and report what it cost; the same for
    the inference step. `devices` defaults to what `train` would use (`default_devices`).

    Raises:
        ContractError: the config does not pass `check`.
    """
    placement = Placement(devices or default_devices())
    devices = placement.num_devices
    survey = config.source().survey()
    found = errors(check_pipeline(config, survey, devices=devices))
    if found:
        raise ContractError(found)
    spec = survey.spec
    if spec is None:  # only a faulted survey has no spec, and check found no fault
        raise ContractError(survey.diagnostics)
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

    infer = jax.jit(train.eval_step).lower(state, batch).compile()
    jax.block_until_ready(infer(state, batch))  # warm up
    started = time.perf_counter()
    for _ in range(steps):
        out = infer(state, batch)
    jax.block_until_ready(out)
    infer_seconds = time.perf_counter() - started

    device = jax.devices()[0]
    flops_per_second = _flops(compiled) * steps / seconds
    peak = peak_flops(device, config.train.precision)
    return {
        "model": config.model.name,
        "input": list(spec.shape),
        "batch_size": batch_size,
        "precision": config.train.precision,
        "steps": steps,
        "compile_seconds": round(compile_seconds, 3),
        "step_ms": round(1000 * seconds / steps, 3),
        "images_per_second": round(batch_size * steps / seconds, 1),
        "inference_images_per_second": round(batch_size * steps / infer_seconds, 1),
        "flops_per_second": round(flops_per_second),
        # Model FLOP utilisation, where the device's peak is known (accelerators).
        "mfu": round(flops_per_second / peak / devices, 4) if peak else None,
        "step_memory_bytes": compiled_bytes(compiled),
        "backend": device.platform,
        "device_kind": device.device_kind,
        "devices": devices,
    }


def _flops(compiled) -> float:
    """XLA's FLOP count of one call of a compiled function (0 where it has none)."""
    analysis = compiled.cost_analysis()
    if isinstance(analysis, list):  # older jax: one dict per program
        analysis = analysis[0] if analysis else {}
    return float((analysis or {}).get("flops", 0.0))


# Dense peak FLOP/s per device, by device kind and compute precision, from the
# vendors' data sheets. A device not listed (every CPU) has no MFU.
_PEAKS = {
    "H100": {"float32": 67e12, "bfloat16": 989e12, "float16": 989e12},
    "H200": {"float32": 67e12, "bfloat16": 989e12, "float16": 989e12},
    "A100": {"float32": 19.5e12, "bfloat16": 312e12, "float16": 312e12},
    "L4": {"float32": 30e12, "bfloat16": 121e12, "float16": 121e12},
    "TPU v4": {"bfloat16": 275e12},
    "TPU v5 lite": {"bfloat16": 197e12},
}


def peak_flops(device: jax.Device, precision: str) -> float | None:
    """The device's dense peak FLOP/s at `precision`, or None where unknown."""
    for kind, peaks in _PEAKS.items():
        if kind.lower() in device.device_kind.lower():
            return peaks.get(precision)
    return None
