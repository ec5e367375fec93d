"""The fixes `check` proposes where only the whole pipeline knows them, each tried first.

A stage or a source sees its own boundary; `check` sees the data, the stages
and the model together. For a fault at the model's input, and for a decode
setting (`size`, `mode`) the model decides, it proposes the config change that
makes the data reach the model as declared, and it runs each candidate through
the specs before giving it: a fix that would only lead to the next error is
never the one proposed.
"""

import dataclasses
import math
from collections.abc import Collection, Iterable, Sequence

from typedpipe.contracts import Accepts, ContractError, Diagnostic, ImageSpec, compare, hints
from typedpipe.models.classifier import logits_layer
from typedpipe.pipeline.config import Config
from typedpipe.pipeline.sources import Survey, config_split
from typedpipe.pipeline.stages import Preprocess, Stage, make_stage

# Values may exceed input_range by this share of its width before it is an
# error: bilinear resampling and float rounding are not faults.
RANGE_SLACK = 1e-3

# Stages that set the height and width they hand on.
_SIZING = ("resize", "center_crop", "random_crop", "random_resized_crop")

# (the hint, the data's spec under it, the stages under it)
Candidate = tuple[str, ImageSpec, tuple[Stage, ...]]


def within(value_range: tuple[float, float], allowed: tuple[float, float]) -> bool:
    """Whether values in `value_range` meet a model built for `allowed` (with the slack)."""
    slack = RANGE_SLACK * (allowed[1] - allowed[0])
    return value_range[0] >= allowed[0] - slack and value_range[1] <= allowed[1] + slack


def model_input_fix(code: str, at_model: ImageSpec, data: ImageSpec, config: Config) -> str:
    """The fix for a fault of `code` at the model's input, tried on the specs first.

    Args:
        code: `shape.spatial`, `shape.channels`, `shape.layout`, `dtype.input` or `range.input`.
        at_model: the spec that reaches the model.
        data: the spec of the data as the source yields it.
        config: the pipeline.
    """
    height, width, channels = config.model.input
    stages = tuple(config.preprocess)
    if code == "dtype.input":
        return f"add {hints.to_float(at_model.dtype)} as the first stage"
    if code == "shape.layout":
        if _has_option(config, "layout"):
            return hints.layout()
        return "store the images channels-last (n, h, w, c)"
    if code == "shape.spatial":
        candidates = _spatial(data, stages, config)
        other = hints.assign("[model]", input=[at_model.height, at_model.width, channels])
    elif code == "shape.channels":
        candidates = _channels(at_model, data, stages, config)
        other = hints.assign("[model]", input=[height, width, at_model.channels])
    else:
        candidates = _range(at_model, data, stages, config)
        got = at_model.value_range or config.model.input_range
        lo, hi = hints.pixel_scale(got, config.model.input_range) or _outward(got)
        other = (
            hints.assign("[model]", input_range=[lo, hi]) + " if the model was built for that range"
        )
    # Other faults at the model have their own fixes: try this one as if they were applied.
    if not at_model.is_float:
        candidates = [
            (hint, spec, (make_stage("to_float", scale=hints.to_float_scale(data.dtype)), *rest))
            for hint, spec, rest in candidates
        ]
    fix = _first_that_works(code, candidates, config)
    return f"{fix}, or {other}" if fix else other


def decode_fixes(
    diagnostics: Iterable[Diagnostic], data: ImageSpec, config: Config
) -> tuple[list[Diagnostic], ImageSpec]:
    """The survey's faults, with the `data.size_mixed` and `data.mode_mixed` fixes chosen for
    the model; and the data's spec as those fixes would decode it, for the checks after.

    The source can only name the most common size or mode; the model's input is
    the one that needs no second resize or conversion.
    """
    height, width, channels = config.model.input
    stages = tuple(config.preprocess)
    found = []
    for diagnostic in diagnostics:
        if diagnostic.code == "data.size_mixed" and _has_option(config, "size"):
            decoded = dataclasses.replace(data, height=height, width=width)
            hint = hints.assign("[data]", size=[height, width])
            if _first_that_works("shape.spatial", [(hint, decoded, stages)], config):
                diagnostic = dataclasses.replace(
                    diagnostic, hint=f"{hint} (the model's input: each file resized as decoded)"
                )
                data = decoded
        elif (
            diagnostic.code == "data.mode_mixed"
            and _has_option(config, "mode")
            and 'mode = "' in diagnostic.hint
            and channels in _MODES
        ):
            decoded = dataclasses.replace(data, channels=channels)
            hint = hints.assign("[data]", mode=_MODES[channels])
            if _first_that_works("shape.channels", [(hint, decoded, stages)], config):
                diagnostic = dataclasses.replace(
                    diagnostic, hint=f"{hint} (the model takes {_channels_text(channels)})"
                )
                data = decoded
        found.append(diagnostic)
    return found, data


def config_fixes(
    diagnostics: Iterable[Diagnostic], config: Config, survey: Survey, faulty: Collection[str]
) -> list[Diagnostic]:
    """A config file's faults, with the fixes only the data can tell: a wrong batch_size,
    num_classes or [model] input gets the value that fits the data, where the loader
    could only describe what is allowed."""
    found = []
    for diagnostic in diagnostics:
        key = diagnostic.got.split(" = ")[0] if diagnostic.code == "config.value" else ""
        fix = None
        if (diagnostic.stage, key) == ("[train]", "batch_size"):
            fix = _batch_size(config, survey, faulty)
        elif (diagnostic.stage, key) == ("[model]", "num_classes"):
            classes = survey.label_spec.num_classes
            fix = num_classes_fix(config, classes) if classes >= 2 else None
        elif (diagnostic.stage, key) == ("[model]", "input") and "preprocess" not in faulty:
            fix = _model_input(config, survey)
        found.append(dataclasses.replace(diagnostic, hint=fix) if fix else diagnostic)
    return found


def num_classes_fix(config: Config, classes: int) -> str:
    """`num_classes = k under [model]`, and the head of a sequential model sized with it."""
    fix = hints.assign("[model]", num_classes=classes)
    model = config.model
    index = logits_layer(model.layers) if model.name == "sequential" else None
    if index is not None:
        head = model.layers[index]
        if head.get("type") == "dense" and head.get("features") == model.num_classes:
            fix += " and " + hints.assign(f"[model] layers[{index}] (dense)", features=classes)
    return fix


def _batch_size(config: Config, survey: Survey, faulty: Collection[str]) -> str | None:
    if "data" in faulty or not len(survey.labels):
        return None
    try:
        train = config_split(config, survey.class_ids).train
    except ContractError:
        return None
    size = min(64, len(train))
    return hints.assign("[train]", batch_size=size) + (" (the default)" if size == 64 else "")


def _model_input(config: Config, survey: Survey) -> str | None:
    if survey.spec is None:
        return None
    try:
        spec = Preprocess(config.preprocess).in_spec(survey.spec)
    except ContractError:
        return None
    return hints.assign("[model]", input=[spec.height, spec.width, spec.channels]) + (
        " (the data's size after preprocessing)"
    )


def _channels_text(channels: int) -> str:
    return "1 channel" if channels == 1 else f"{channels} channels"


# The decode mode that gives the model's channel count.
_MODES = {1: "gray", 3: "rgb"}


def _spatial(data: ImageSpec, stages: tuple[Stage, ...], config: Config) -> list[Candidate]:
    height, width, _ = config.model.input
    candidates: list[Candidate] = []
    if _has_option(config, "size"):
        candidates.append(
            (
                hints.assign("[data]", size=[height, width]) + " (resized as decoded)",
                dataclasses.replace(data, height=height, width=width),
                stages,
            )
        )
    sizing = [i for i, stage in enumerate(stages) if stage.op in _SIZING]
    if sizing:
        index = sizing[-1]
        changed = list(stages)
        changed[index] = _changed(stages[index], height=height, width=width)
        candidates.append(
            (
                hints.assign(_place(index, stages), height=height, width=width),
                data,
                tuple(changed),
            )
        )
    candidates.append(_append(data, stages, "resize", height=height, width=width))
    return candidates


def _channels(
    at_model: ImageSpec, data: ImageSpec, stages: tuple[Stage, ...], config: Config
) -> list[Candidate]:
    channels = config.model.input[2]
    candidates: list[Candidate] = []
    if _has_option(config, "mode") and channels in _MODES:
        candidates.append(
            (
                hints.assign("[data]", mode=_MODES[channels]),
                dataclasses.replace(data, channels=channels),
                stages,
            )
        )
    if (at_model.channels, channels) == (1, 3):
        candidates.append(_append(data, stages, "to_rgb"))
    if (at_model.channels, channels) == (3, 1):
        candidates.append(_append(data, stages, "to_gray"))
    return candidates


def _range(
    at_model: ImageSpec, data: ImageSpec, stages: tuple[Stage, ...], config: Config
) -> list[Candidate]:
    allowed = config.model.input_range
    got = at_model.value_range or allowed
    candidates: list[Candidate] = []
    scaled = [i for i, stage in enumerate(stages) if stage.op == "to_float"]
    # Integer pixels scaled by the wrong factor: the to_float scale for their dtype.
    if scaled and allowed[0] == 0.0 and not data.is_float:
        index = scaled[-1]
        if not any(stage.op == "normalize" for stage in stages[index:]):
            scale = hints.to_float_scale(data.dtype) * allowed[1]
            changed = list(stages)
            changed[index] = _changed(stages[index], scale=scale)
            candidates.append(
                (hints.assign(_place(index, stages), scale=scale), data, tuple(changed))
            )
    candidates.append(
        _append(data, stages, "normalize", **hints.onto(got, allowed, at_model.channels))
    )
    return candidates


def _outward(value_range: tuple[float, float]) -> tuple[float, float]:
    """A range a person can read that still holds `value_range`."""
    lo, hi = value_range
    digits = 3 - math.floor(math.log10(max(abs(lo), abs(hi), 1e-30)))
    scale = 10.0**digits
    return (math.floor(lo * scale) / scale, math.ceil(hi * scale) / scale)


def _append(data: ImageSpec, stages: tuple[Stage, ...], op: str, **params) -> Candidate:
    return (
        f"add {hints.stage_line(op, **params)} as the last stage",
        data,
        (*stages, make_stage(op, **params)),
    )


def _changed(stage: Stage, **changes: object) -> Stage:
    """`stage` with some keys set otherwise, built as the config would build it."""
    return make_stage(stage.op, **{**dataclasses.asdict(stage), **changes})


def _place(index: int, stages: Sequence[Stage]) -> str:
    return f"[[preprocess]] #{index + 1} ({stages[index].op})"


def _has_option(config: Config, key: str) -> bool:
    """Whether the configured source has a `[data]` key `key` (imagefolder's size, npz's layout)."""
    options = config.data.options
    return dataclasses.is_dataclass(options) and key in {
        field.name for field in dataclasses.fields(options)
    }


def _first_that_works(code: str, candidates: Iterable[Candidate], config: Config) -> str | None:
    """The first candidate under which the data reaches the model free of `code`."""
    height, width, channels = config.model.input
    accepts = Accepts("float", height, width, channels)
    for hint, spec, stages in candidates:
        try:
            out = Preprocess(stages).in_spec(spec)
        except ContractError:
            continue
        if out.layout != "nhwc":
            continue
        batch = (1, out.height, out.width, out.channels)
        if code in {m.code for m in compare(accepts, batch, out.dtype)}:
            continue
        if code == "range.input" and not (
            out.value_range is None or within(out.value_range, config.model.input_range)
        ):
            continue
        return hint
    return None
