"""`check`: the whole pipeline validated before any step, every fault reported at once.

The data's spec flows through every stage into the model's input contract, the
model is built abstractly (`nnx.eval_shape`, nothing allocated) so each layer can
refuse its input, and the labels are held against the head.
"""

import numpy as np
from flax import nnx

from typedpipe.contracts import ConfigError, ContractError, Diagnostic, ImageSpec, hints
from typedpipe.models import build_model
from typedpipe.pipeline.config import Config
from typedpipe.pipeline.sources import Dataset
from typedpipe.pipeline.stages import Preprocess

# Values may exceed input_range by this share of its width before it is an
# error: bilinear resampling and float rounding are not faults.
_RANGE_SLACK = 1e-3


def check_pipeline(config: Config, dataset: Dataset) -> list[Diagnostic]:
    """All faults of `config` applied to `dataset`, in pipeline order; empty when sound."""
    diagnostics = check_labels(config, dataset)
    try:
        spec = Preprocess(config.preprocess).in_spec(dataset.spec)
    except ContractError as err:
        diagnostics.extend(err.diagnostics)
    else:
        diagnostics.extend(check_model_input(spec, config))
    diagnostics.extend(check_model(config))
    return diagnostics


def check_model(config: Config) -> list[Diagnostic]:
    """Build the model without allocating it; layer faults become diagnostics."""
    model = config.model
    try:
        nnx.eval_shape(lambda: build_model(model.name, model.input, model.num_classes,
                                           model.layers, rngs=nnx.Rngs(0)))
    except (ContractError, ConfigError) as err:
        return list(err.diagnostics)
    return []


def check_model_input(spec: ImageSpec, config: Config) -> list[Diagnostic]:
    """The spec reaching the model, held against `[model] input` and `input_range`."""
    height, width, channels = config.model.input
    expected = f"float b {height} {width} {channels}"
    wanted_range = config.model.input_range

    def fault(code: str, message: str, hint: str, expected: str = expected) -> Diagnostic:
        return Diagnostic(code, message, stage="model", expected=expected,
                          got=spec.describe(), hint=hint)

    if spec.layout != "nhwc":
        return [fault("shape.layout", "the model expects channels-last images", hints.layout())]
    found = []
    if not spec.is_float:
        found.append(fault("dtype.input", f"{spec.dtype} pixels reach the model, which "
                           "expects floats", hints.dtype(expected_float=True)))
    if (spec.height, spec.width) != (height, width):
        found.append(fault("shape.spatial", f"{spec.height}x{spec.width} images reach a model "
                           f"built for {height}x{width}", hints.spatial(height, width)))
    if spec.channels != channels:
        found.append(fault("shape.channels", f"{spec.channels}-channel images reach a model "
                           f"built for {channels}", hints.channels(channels, spec.channels)))
    if spec.value_range is not None and spec.is_float:
        lo, hi = spec.value_range
        slack = _RANGE_SLACK * (wanted_range[1] - wanted_range[0])
        if lo < wanted_range[0] - slack or hi > wanted_range[1] + slack:
            found.append(fault(
                "range.input", f"values in [{lo:g}, {hi:g}] reach a model whose "
                f"input_range is [{wanted_range[0]:g}, {wanted_range[1]:g}]",
                hints.value_range((lo, hi), wanted_range),
                expected=f"{expected} in [{wanted_range[0]:g}, {wanted_range[1]:g}]",
            ))
    return found


def check_labels(config: Config, dataset: Dataset) -> list[Diagnostic]:
    """Label format, count and range against the model head."""
    num_classes = config.model.num_classes
    labels = dataset.labels
    found = []
    if labels.ndim == 2 and config.data.labels == "int":
        found.append(Diagnostic(
            "labels.format", "the labels are one-hot rows but [data] labels = \"int\"",
            stage="labels", expected="int32 b", got=f"{labels.dtype} b {labels.shape[1]}",
            hint=hints.label_format("int"),
        ))
        return found
    if labels.ndim == 1 and config.data.labels == "onehot":
        found.append(Diagnostic(
            "labels.format", "the labels are integers but [data] labels = \"onehot\"",
            stage="labels", expected=f"float32 b {num_classes}", got=f"{labels.dtype} b",
            hint=hints.label_format("onehot"),
        ))
        return found
    classes = dataset.class_ids
    if dataset.label_spec.num_classes != num_classes:
        found.append(Diagnostic(
            "labels.count", f"the data has {dataset.label_spec.num_classes} classes, the model "
            f"head {num_classes}", stage="model", expected=f"{num_classes} classes",
            got=f"{dataset.label_spec.num_classes} classes",
            hint=f"set num_classes = {dataset.label_spec.num_classes} under [model]",
        ))
    out_of_range = np.flatnonzero((classes < 0) | (classes >= num_classes))
    if out_of_range.size:
        found.append(Diagnostic(
            "labels.range", f"{out_of_range.size} labels fall outside [0, {num_classes})",
            stage="labels", expected=f"0 <= label < {num_classes}",
            got=f"labels in [{classes.min()}, {classes.max()}]",
            hint=f"set num_classes = {int(classes.max()) + 1} under [model], or fix the labels",
            items=tuple(f"#{i}" for i in out_of_range),
        ))
    return found


def errors(diagnostics: list[Diagnostic]) -> list[Diagnostic]:
    return [d for d in diagnostics if d.is_error]
