"""Concrete fixes: the config lines that repair a broken boundary.

A hint that is a config edit is written in one of a few forms, so that a person
can type it as it reads and a test can apply it as it reads
(`tests/test_hints.py` applies every hint the catalog gives, then checks again):

    key = value under [train]                 set a key of [data], [model] or [train]
    key = value at the top level              set a top-level key
    key = value in [[preprocess]] #2 (resize) set a key of a stage or a layer entry
    key = value in [model] layers[3] (dense)
    k1 = v1 and k2 = v2 under [data]          several keys at once
    rename batchsize to batch_size under [train]
    remove rngs from [model] layers[0] (conv)
    add [[preprocess]] op = "to_float" scale = 0.00392156862745098 as the first stage
        (or: as the last stage, before [[preprocess]] #2 (resize))
    replace [[preprocess]] #1 (to_float) with [[preprocess]] op = "normalize" mean = [0.0] ...
    remove [[preprocess]] #1 (to_float)
    add {type = "flatten"} before [model] layers[2] (dense)

An explanation may lead (`resize at decode: size = ...`) or trail in parentheses
(`(the default)`); a fix may be followed by `, or` and another way to fix it.
Values are TOML, exactly as they go into the file.
"""

import numpy as np

from typedpipe.contracts.compare import Accepts

#: Where a stage's own hint says "this stage": `Preprocess.flow` names it
#: (`[[preprocess]] #2 (resize)`), since a stage does not know its position.
THIS_STAGE = "this stage"


def toml(value: object) -> str:
    """A value as TOML writes it: `"rgb"`, `[8, 8, 1]`, `0.5`, `true`."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(toml(v) for v in value) + "]"
    if isinstance(value, float):
        return repr(float(value))
    return str(value)


def at(where: str) -> str:
    """How a hint names a place: `under [train]`, `at the top level`, `in [model] layers[2]`."""
    if where == "the top level":
        return "at the top level"
    if where.isidentifier():  # a registry's bare table name: `model`
        where = f"[{where}]"
    if where.startswith("[") and where.endswith("]") and " " not in where:
        return f"under {where}"
    return f"in {where}"


def assign(where: str, **values: object) -> str:
    """`k1 = v1 and k2 = v2 under [table]`."""
    pairs = " and ".join(f"{key} = {toml(value)}" for key, value in values.items())
    return f"{pairs} {at(where)}"


def stage_line(op: str, **params: object) -> str:
    """`[[preprocess]] op = "resize" height = 16 width = 16`: one stage, on one line."""
    return " ".join(
        [f"[[preprocess]] op = {toml(op)}", *(f"{k} = {toml(v)}" for k, v in params.items())]
    )


def to_float_scale(dtype: str) -> float:
    """The scale that maps an integer dtype's full range onto [0, 1] (1/255 for uint8)."""
    try:
        info = np.iinfo(np.dtype(dtype))
    except (TypeError, ValueError):
        return 1.0 / 255.0
    return 1.0 / float(info.max)


def to_float(dtype: str = "uint8") -> str:
    """The to_float stage for integer pixels of `dtype` (scale 1/255 for uint8)."""
    return stage_line("to_float", scale=to_float_scale(dtype))


def onto(
    got: tuple[float, float], allowed: tuple[float, float], channels: int
) -> dict[str, list[float]]:
    """The normalize parameters that map values in `got` linearly onto `allowed`.

    Pixels on a 0..255 scale are mapped as 0..255, so the stage reads as what it
    is (`mean = [0.0] std = [255.0]` for [0, 1]) and holds for files the sample missed.
    """
    lo, hi = pixel_scale(got, allowed) or got
    low, high = allowed
    std = (hi - lo) / (high - low) if hi > lo else 1.0
    mean = lo - low * std
    return {"mean": [rounded(mean)] * channels, "std": [rounded(std)] * channels}


def pixel_scale(
    got: tuple[float, float], allowed: tuple[float, float]
) -> tuple[float, float] | None:
    """(0, 255) when `got` looks like 8-bit pixels that were never scaled, else None."""
    lo, hi = got
    if lo >= 0.0 and 1.5 * allowed[1] < hi <= 255.0 and allowed[1] <= 1.5:
        return (0.0, 255.0)
    return None


def rounded(value: float) -> float:
    """Six significant digits: a config value a person can read, exact enough for a range."""
    return float(f"{value:.6g}")


def spatial(height: int | str, width: int | str) -> str:
    """Resize before a stage that needs a larger image."""
    return f"add {stage_line('resize', height=height, width=width)} before {THIS_STAGE}"


def channels(expected: int | str, got: int | str) -> str:
    """A generic channel fix, for boundaries that know nothing of the pipeline."""
    if (got, expected) == (1, 3):
        return f"add {stage_line('to_rgb')} before {THIS_STAGE}"
    if (got, expected) == (3, 1):
        return f"add {stage_line('to_gray')} before {THIS_STAGE}"
    if got == 4:
        return assign("[data]", mode="rgb") + " (decodes RGBA files as RGB)"
    return f"make the previous stage or layer output {expected} channels"


def layout() -> str:
    return assign("[data]", layout="nchw") + " (the images are stored channels-first)"


def dtype(expected_float: bool, stored: str = "uint8") -> str:
    if expected_float:
        return f"add {to_float(stored)} before {THIS_STAGE}"
    return f"remove {THIS_STAGE}: the pixels are floats already"


def label_format(expected: str) -> str:
    if expected == "onehot":
        return assign("[data]", labels="int") + ", or store one-hot labels"
    return assign("[data]", labels="onehot") + " (the labels are stored one-hot)"


def fix(code: str, accepts: Accepts, batch_shape: tuple[int, ...], stored: str = "uint8") -> str:
    """The config change for a `compare` mismatch of `code` at a stage or layer."""
    if code == "shape.rank":
        return "add or remove the missing axis (batch images as b h w c)"
    if code == "shape.layout":
        return layout()
    if code == "dtype.input":
        return dtype(accepts.wants_float, stored)
    if code == "shape.spatial":
        return spatial(accepts.height or "h", accepts.width or "w")
    return channels(accepts.channels or "c", batch_shape[-1])
