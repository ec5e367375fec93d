"""Concrete fixes: the config lines that repair a broken boundary."""

from typedpipe.contracts.compare import Accepts

TO_FLOAT = '[[preprocess]] op = "to_float" scale = 0.00392156862745098  # 1/255'


def spatial(height: int | str, width: int | str) -> str:
    return (
        f'add [[preprocess]] op = "resize" height = {height} width = {width} (after to_float), '
        f"or set [model] input to the data's size"
    )


def channels(expected: int | str, got: int | str) -> str:
    if (got, expected) == (1, 3):
        return 'add [[preprocess]] op = "to_rgb"'
    if (got, expected) == (3, 1):
        return 'add [[preprocess]] op = "to_gray"'
    if got == 4:
        return 'decode as RGB: mode = "rgb" under [data]'
    return f"set the channel count in [model] input to {got}"


def layout() -> str:
    return 'the images are stored channels-first: set layout = "nchw" under [data]'


def dtype(expected_float: bool) -> str:
    if expected_float:
        return f"add {TO_FLOAT} before this stage"
    return 'remove the "to_float" stage before this one, or move it after'


def value_range(got: tuple[float, float], allowed: tuple[float, float]) -> str:
    lo, hi = got
    if hi > 1.5 * allowed[1] and hi <= 255.0 and lo >= 0.0:
        return f"scale the pixels: {TO_FLOAT}"
    return (
        '[[preprocess]] op = "normalize" with the data\'s mean and std, or set '
        f"[model] input_range = [{lo:g}, {hi:g}] if the model was built for that range"
    )


def label_format(expected: str) -> str:
    if expected == "onehot":
        return 'set labels = "int" under [data] or store one-hot labels'
    return 'set labels = "onehot" under [data] (the labels are stored one-hot)'


def fix(code: str, accepts: Accepts, batch_shape: tuple[int, ...]) -> str:
    """The config change for a `compare` mismatch of `code` at a stage or the model."""
    if code == "shape.rank":
        return "add or remove the missing axis (batch images as b h w c)"
    if code == "shape.layout":
        return layout()
    if code == "dtype.input":
        return dtype(accepts.wants_float)
    if code == "shape.spatial":
        return spatial(accepts.height or "h", accepts.width or "w")
    return channels(accepts.channels or "c", batch_shape[-1])
