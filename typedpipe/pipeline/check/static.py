"""`check`: the whole pipeline validated before any step, every fault reported at once.

In order: the host audit of the data (the source's survey); the labels against the
head; the data's spec flowing through every stage into the model's input
contract; the model built abstractly (`nnx.eval_shape`, nothing allocated) so
each layer can refuse its input; the split and batch sizes; and, when all of
that is sound, the full train step traced and compiled on shapes alone
(`preflight`) for what is left, including memory. A config with faults in
some tables (`check_draft`) still has its data and its sound parts checked,
so one run reports the config's faults and the data's together.
"""

import math
from collections.abc import Collection

import numpy as np
from flax import nnx

from typedpipe.contracts import (
    Accepts,
    ConfigError,
    ContractError,
    Diagnostic,
    ImageSpec,
    compare,
    hints,
)
from typedpipe.models import MODELS, build_model
from typedpipe.models.classifier import logits_activation
from typedpipe.pipeline.check.fixes import (
    config_fixes,
    decode_fixes,
    model_input_fix,
    num_classes_fix,
    within,
)
from typedpipe.pipeline.check.preflight import check_step
from typedpipe.pipeline.check.weights import check_weights
from typedpipe.pipeline.config import Config, Draft
from typedpipe.pipeline.sources import Survey, split_indices
from typedpipe.pipeline.sources.loader import PREFETCH
from typedpipe.pipeline.sources.memory import budget, over_budget, size_text
from typedpipe.pipeline.stages import Preprocess

# The step counter is an int32: a run never takes this many steps.
_MAX_STEPS = 2**31 - 1


def check_pipeline(
    config: Config,
    survey: Survey | None = None,
    *,
    devices: int = 1,
    faulty: Collection[str] = (),
) -> list[Diagnostic]:
    """All faults of `config` applied to its data, in pipeline order; empty when sound.

    Args:
        config: the pipeline.
        survey: the data's audit; by default the configured source is surveyed.
        devices: how many devices the batch will be split over.
        faulty: parts of a config that failed to load (`Draft.faulty`: `data`, `model`,
            `model.layers`, `train`, `preprocess`): the checks that rest on them are
            skipped, the others run.
    """

    def sound(*parts: str) -> bool:
        return not set(parts) & set(faulty)

    if not sound("data"):
        return check_model_and_weights(config) if sound("model", "model.layers") else []
    survey = survey if survey is not None else config.source().survey()
    data = survey.spec
    if data is not None and sound("model", "preprocess"):
        diagnostics, data = decode_fixes(survey.diagnostics, data, config)
    else:
        diagnostics = list(survey.diagnostics)
    if len(survey.labels):
        if sound("model"):
            diagnostics.extend(check_labels(config, survey))
        if sound("train"):
            diagnostics.extend(check_batching(config, survey.class_ids, devices))
    if data is not None:
        if sound("train"):
            diagnostics.extend(check_host_batch(config, data))
        if sound("preprocess"):
            try:
                spec = Preprocess(config.preprocess).in_spec(data)
            except ContractError as err:
                diagnostics.extend(err.diagnostics)
            else:
                if sound("model"):
                    diagnostics.extend(check_model_input(spec, config, data))
    if sound("model", "model.layers"):
        diagnostics.extend(check_model_and_weights(config))
    if survey.spec is not None and not faulty and not errors(diagnostics):
        diagnostics.extend(
            check_step(config, survey.spec, survey.labels, survey.label_spec.format, devices)
        )
    return diagnostics


def check_draft(
    draft: Draft, survey: Survey | None = None, *, devices: int = 1
) -> list[Diagnostic]:
    """The faults of a config file and, as far as they leave it sound, of its pipeline:
    a typo in `[train]` does not hide a fault in the data.

    Example:
        >>> from typedpipe.pipeline.config import parse_draft
        >>> draft = parse_draft('[train]\\noptimizer = "adamm"\\n')
        >>> [d.code for d in check_draft(draft)]
        ['config.unknown_name', 'dtype.input']
    """
    config, faulty = draft.config, draft.faulty
    if survey is None and "data" not in faulty:
        survey = config.source().survey()
    found = check_pipeline(config, survey, devices=devices, faulty=faulty)
    config_faults = list(draft.diagnostics)
    if survey is not None:
        config_faults = config_fixes(config_faults, config, survey, faulty)
    return [*config_faults, *found]


def check_model(config: Config) -> list[Diagnostic]:
    """Build the model without allocating it; layer faults become diagnostics.

    The logits layer must apply no activation (the loss applies softmax): refused
    here and by the config loader, not by `build_model`, so that a bundle trained
    before the rule still loads.
    """
    model = config.model
    try:
        logits = logits_activation(
            MODELS.get(model.name)(model.input, model.num_classes, model.layers)
        )
        if logits is not None:
            return [logits]
        nnx.eval_shape(
            lambda: build_model(
                model.name, model.input, model.num_classes, model.layers, rngs=nnx.Rngs(0)
            )
        )
    except (ContractError, ConfigError) as err:
        return list(err.diagnostics)
    return []


def check_model_and_weights(config: Config) -> list[Diagnostic]:
    """`check_model`, then `[model] weights` against the model once it builds."""
    found = check_model(config)
    return found if errors(found) else [*found, *check_weights(config)]


def check_model_input(
    spec: ImageSpec, config: Config, data: ImageSpec | None = None
) -> list[Diagnostic]:
    """The spec reaching the model, held against `[model] input` and `input_range`.

    `data` is the data's spec as the source yields it (by default `spec`): the fixes
    are tried on it before they are proposed.
    """
    data = data if data is not None else spec
    height, width, channels = config.model.input
    expected = f"float b {height} {width} {channels}"
    wanted_range = config.model.input_range

    def fault(code: str, message: str, expected: str = expected) -> Diagnostic:
        return Diagnostic(
            code,
            message,
            stage="model",
            expected=expected,
            got=spec.describe(),
            hint=model_input_fix(code, spec, data, config),
        )

    if spec.layout != "nhwc":
        return [fault("shape.layout", "the model expects channels-last images")]
    accepts = Accepts("float", height, width, channels)
    batch_shape = (1, spec.height, spec.width, spec.channels)
    found = [
        fault(m.code, f"the batch reaching the model {m.message}")
        for m in compare(accepts, batch_shape, spec.dtype)
    ]
    if spec.value_range is not None and spec.is_float:
        lo, hi = spec.value_range
        if not within((lo, hi), wanted_range):
            found.append(
                fault(
                    "range.input",
                    f"values in [{lo:g}, {hi:g}] reach a model whose "
                    f"input_range is [{wanted_range[0]:g}, {wanted_range[1]:g}]",
                    expected=f"{expected} in [{wanted_range[0]:g}, {wanted_range[1]:g}]",
                )
            )
    return found


def check_labels(config: Config, survey: Survey) -> list[Diagnostic]:
    """Label format, count and range against the model head."""
    num_classes = config.model.num_classes
    labels = survey.labels

    def fault(
        code: str, message: str, expected: str, got: str, hint: str, items=(), stage: str = "labels"
    ) -> list[Diagnostic]:
        return [
            Diagnostic(
                code,
                message,
                stage=stage,
                expected=expected,
                got=got,
                hint=hint,
                items=tuple(items),
            )
        ]

    if labels.ndim == 2 and config.data.labels == "int":
        return fault(
            "labels.format",
            'the labels are one-hot rows but [data] labels = "int"',
            "int32 b",
            f"{labels.dtype} b {labels.shape[1]}",
            hints.label_format("int"),
        )
    if labels.ndim == 1 and config.data.labels == "onehot":
        return fault(
            "labels.format",
            'the labels are integers but [data] labels = "onehot"',
            f"float32 b {num_classes}",
            f"{labels.dtype} b",
            hints.label_format("onehot"),
        )
    if labels.ndim == 2 and not np.isfinite(labels).all():
        rows = np.flatnonzero(~np.isfinite(labels).all(axis=1))
        return fault(
            "value.nonfinite",
            f"{rows.size} one-hot label row(s) hold NaN or inf",
            "finite one-hot rows",
            "NaN/inf",
            "repair or drop these labels",
            items=(f"#{i}" for i in rows),
        )
    classes = survey.class_ids
    out_of_range = np.flatnonzero((classes < 0) | (classes >= num_classes))
    if out_of_range.size:
        widen = num_classes_fix(config, int(classes.max()) + 1)
        hint = (
            f"the labels look 1-based: store label - 1, or {widen}"
            if classes.min() == 1
            else f"{widen}, or fix the labels"
        )
        return fault(
            "labels.range",
            f"{out_of_range.size} label(s) fall outside [0, {num_classes})",
            f"0 <= label < {num_classes}",
            f"labels in [{classes.min()}, {classes.max()}]",
            hint,
            items=survey.item_names(out_of_range.tolist()),
        )
    data_classes = survey.label_spec.num_classes
    if data_classes != num_classes:
        return fault(
            "labels.count",
            f"the data has {data_classes} classes, the model head {num_classes}",
            f"{num_classes} classes",
            f"{data_classes} classes",
            num_classes_fix(config, data_classes),
            stage="model",
        )
    return []


def check_batching(config: Config, classes: np.ndarray, devices: int) -> list[Diagnostic]:
    """The split must work, and the batch must fit the training part and the devices."""
    data, batch_size = config.data, config.train.batch_size
    try:
        train = split_indices(classes, data.val_fraction, data.test_fraction, config.seed).train
    except ContractError as err:
        return list(err.diagnostics)
    found = []
    if batch_size > len(train):
        found.append(
            Diagnostic(
                "config.value",
                f"batch_size {batch_size} is larger than the {len(train)} training images",
                stage="[train]",
                expected=f"batch_size <= {len(train)}",
                got=f"batch_size = {batch_size}",
                hint=f"batch_size = {min(64, len(train))} under [train]",
            )
        )
    steps = len(train) // batch_size
    if steps and config.train.epochs * steps > _MAX_STEPS:
        found.append(
            Diagnostic(
                "config.value",
                f"{config.train.epochs} epochs of {steps} steps are more steps than a run "
                f"counts ({_MAX_STEPS:,})",
                stage="[train]",
                expected=f"epochs * {steps} steps <= {_MAX_STEPS:,}",
                got=f"epochs = {config.train.epochs}",
                hint=f"epochs = {_MAX_STEPS // steps} under [train]",
            )
        )
    if batch_size % devices:
        found.append(
            Diagnostic(
                "config.value",
                f"batch_size {batch_size} does not split over {devices} devices",
                stage="[train]",
                expected=f"a multiple of {devices}",
                got=f"batch_size = {batch_size}",
                hint=f"batch_size = {batch_size - batch_size % devices or devices} under [train]",
            )
        )
    return found


def check_host_batch(config: Config, spec: ImageSpec) -> list[Diagnostic]:
    """The batches the loader holds in host memory (the one in use and those read ahead),
    against the host's memory: a lower bound, checked before any is read."""
    batch_size = config.train.batch_size
    image = math.prod(spec.shape) * _itemsize(spec.dtype)
    held = PREFETCH + 1
    need = batch_size * image * held
    if need <= budget():
        return []
    fits = budget() // (image * held)
    hint = (
        f"batch_size = {2 ** int(math.log2(fits))} under [train] (the largest power of two "
        "that fits)"
        if fits >= 1
        else "even one image does not fit: decode smaller images (size = [h, w] under [data])"
    )
    return [
        over_budget(
            f"{held} batches of {batch_size} {spec.describe()} images ({size_text(image)} each)",
            need,
            hint,
            stage="[train]",
        )
    ]


def _itemsize(dtype: str) -> int:
    try:
        return np.dtype(dtype).itemsize
    except TypeError:  # a dtype NumPy does not name (bfloat16): as wide as float32 at most
        return 4


def errors(diagnostics: list[Diagnostic]) -> list[Diagnostic]:
    return [d for d in diagnostics if d.is_error]
