"""Preflight: the full train step traced and compiled on shapes alone, before any data moves.

`jax.eval_shape` runs the step's Python (preprocess, model, loss, gradient,
optimizer update) on `ShapeDtypeStruct`s, so every contract fires and no FLOP is
spent. Then the step is lowered and compiled for the configured batch, still
without allocating an input, and XLA's memory analysis is held against what the
device has (host RAM on CPU).
"""

import jax
import numpy as np

from typedpipe.contracts import ConfigError, ContractError, Diagnostic, ImageSpec
from typedpipe.memory import HEADROOM, device_memory, exceeds
from typedpipe.pipeline.config import Config
from typedpipe.pipeline.sources import Batch
from typedpipe.pipeline.train.step import make_train


def check_step(
    config: Config, spec: ImageSpec, labels: np.ndarray, label_format: str, devices: int = 1
) -> list[Diagnostic]:
    """Trace the train step on abstract values, then check its compiled memory."""
    return _narrowed(spec) + _step_faults(config, spec, labels, label_format, devices)


def _narrowed(spec: ImageSpec) -> list[Diagnostic]:
    """A warning when the device holds the images in a narrower dtype than they are stored."""
    device_dtype = str(_device_dtype(spec.dtype))
    if device_dtype == spec.dtype:
        return []
    return [
        Diagnostic(
            "dtype.input",
            f"{spec.dtype} images are computed as {device_dtype} on the device "
            "(JAX runs without 64-bit types by default)",
            stage="data",
            expected=device_dtype,
            got=spec.dtype,
            hint=f"store the images as {device_dtype}, or enable jax_enable_x64",
            severity="warning",
        )
    ]


def _step_faults(
    config: Config, spec: ImageSpec, labels: np.ndarray, label_format: str, devices: int
) -> list[Diagnostic]:
    key = jax.random.key(0)

    def batch(size: int) -> Batch:
        return Batch(
            jax.ShapeDtypeStruct((size, *spec.shape), _device_dtype(spec.dtype)),
            jax.ShapeDtypeStruct((size, *labels.shape[1:]), _device_dtype(labels.dtype)),
            jax.ShapeDtypeStruct((size,), np.dtype(bool)),
        )

    per_device = max(config.train.batch_size // devices, 1)
    try:
        train = make_train(config, label_format, steps_per_epoch=1)
        state = jax.eval_shape(train.init_state, key)
        jax.eval_shape(train.train_step, state, batch(per_device), key)
    except (ContractError, ConfigError) as err:
        return list(err.diagnostics)
    except Exception as err:  # reported with its code, never as a traceback
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else ""
        return [
            Diagnostic(
                "step.trace",
                f"the train step cannot be traced: {type(err).__name__}: {first_line}",
                stage="train step",
                expected="a step that traces",
                got=type(err).__name__,
                hint="run typedpipe summary to see the shapes; if the config is valid, this is a "
                "typedpipe bug: please report it with the config",
            )
        ]

    step = jax.jit(train.train_step, donate_argnums=0)

    def step_bytes(size: int) -> int:
        compiled = step.lower(state, batch(size), key).compile()
        return compiled_bytes(compiled) or 0  # 0: a backend without memory analysis

    need = step_bytes(per_device)
    limit, where = device_memory()
    if need <= limit * HEADROOM:
        return []
    # Memory grows linearly with the batch: two compiles give the fixed part and the
    # part per image, and so the largest batch that fits.
    smaller = max(per_device // 8, 1)
    need_smaller = step_bytes(smaller) if smaller < per_device else need
    per_image = max((need - need_smaller) / max(per_device - smaller, 1), 1.0)
    fits = int((limit * HEADROOM - (need - per_image * per_device)) // per_image) * devices
    if fits >= 1:
        fits = 2 ** int(np.log2(fits))
        hint = f"batch_size = {fits} under [train] (the largest power of two that fits)"
    else:
        hint = (
            "even one image does not fit: lower [model] input, use a smaller model, or "
            'precision = "bfloat16" under [train]'
        )
    return [
        exceeds(
            "the compiled train step",
            need,
            limit,
            where,
            batch=f"per device for batch {config.train.batch_size}",
            stage="[train]",
            hint=hint,
            setting=f"batch_size = {config.train.batch_size}",
            unit="GiB",
            share=True,
        )
    ]


def compiled_bytes(compiled) -> int | None:
    """Peak bytes of a compiled program: its buffers in and out (donated ones once) and scratch."""
    stats = compiled.memory_analysis()
    if stats is None:  # a backend without memory analysis
        return None
    return (
        stats.argument_size_in_bytes
        + stats.output_size_in_bytes
        - stats.alias_size_in_bytes
        + stats.temp_size_in_bytes
        + stats.generated_code_size_in_bytes
    )


def _device_dtype(dtype) -> np.dtype:
    """The dtype an array of `dtype` has once on the device (float64 is float32 without x64)."""
    return jax.dtypes.canonicalize_dtype(dtype)
