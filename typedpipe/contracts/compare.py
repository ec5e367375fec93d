"""The one decision of which code fits an image-batch mismatch.

A stage's input check, the model-input check, a jaxtyping failure on a layer,
the exported model's input check and the npz audit all ask the same question:
this batch arrived where that one was expected, what is wrong with it? The
answer, `shape.rank`, `shape.layout`, `dtype.input`, `shape.spatial` or
`shape.channels`, is decided here and nowhere else.
"""

import dataclasses
from typing import Literal

from typedpipe.contracts.specs import FLOAT_DTYPES

#: Channel counts an image can have: gray, RGB, RGBA.
IMAGE_CHANNELS = (1, 3, 4)

DtypeWant = Literal["float", "int", "any"] | str

Code = Literal["shape.rank", "shape.layout", "dtype.input", "shape.spatial", "shape.channels"]


@dataclasses.dataclass(frozen=True)
class Accepts:
    """What a boundary accepts: a dtype (a family or one exact dtype) and sizes (None: any).

    Example:
        >>> Accepts("float", 8, 8, 1).describe()
        'float b 8 8 1'
    """

    dtype: DtypeWant = "any"
    height: int | None = None
    width: int | None = None
    channels: int | None = None

    def dtype_ok(self, dtype: str) -> bool:
        if self.dtype == "any":
            return True
        if self.dtype == "float":
            return dtype in FLOAT_DTYPES
        if self.dtype == "int":
            return "int" in dtype
        return dtype == self.dtype

    @property
    def wants_float(self) -> bool:
        return self.dtype == "float" or self.dtype in FLOAT_DTYPES

    def describe(self) -> str:
        dims = [
            "h" if self.height is None else str(self.height),
            "w" if self.width is None else str(self.width),
            "c" if self.channels is None else str(self.channels),
        ]
        return f"{self.dtype} b {' '.join(dims)}"


@dataclasses.dataclass(frozen=True)
class Mismatch:
    """One way a batch misses what a boundary accepts."""

    code: Code
    message: str


def looks_channels_first(batch_shape: tuple[int, ...]) -> bool:
    """`b c h w`: axis 1 holds a channel count and the last axis does not."""
    return (
        len(batch_shape) == 4
        and batch_shape[1] in IMAGE_CHANNELS
        and batch_shape[3] not in IMAGE_CHANNELS
    )


def looks_channels_last(batch_shape: tuple[int, ...]) -> bool:
    """`b h w c`: the last axis holds a channel count and axis 1 does not."""
    return (
        len(batch_shape) == 4
        and batch_shape[3] in IMAGE_CHANNELS
        and batch_shape[1] not in IMAGE_CHANNELS
    )


def compare(accepts: Accepts, batch_shape: tuple[int, ...], dtype: str) -> list[Mismatch]:
    """Every way a batch of `batch_shape` and `dtype` misses `accepts`; empty when it fits.

    A wrong rank or a channels-first layout is the only fault reported, since
    the sizes cannot be read against the contract; otherwise the dtype, the
    spatial size and the channel count are each checked, so one report names
    them all.

    Example:
        >>> [m.code for m in compare(Accepts("float", 16, 16, 3), (4, 8, 8, 1), "uint8")]
        ['dtype.input', 'shape.spatial', 'shape.channels']
    """
    if len(batch_shape) != 4:
        axes = len(batch_shape)
        return [Mismatch("shape.rank", f"has {axes} axes where 4 (b h w c) are declared")]
    _, height, width, channels = batch_shape
    if looks_channels_first(batch_shape) and channels != accepts.channels:
        return [Mismatch("shape.layout", "looks channels-first (b c h w)")]
    found = []
    if not accepts.dtype_ok(dtype):
        found.append(
            Mismatch("dtype.input", f"has {dtype} pixels where {accepts.dtype} are expected")
        )
    want_h = accepts.height if accepts.height is not None else height
    want_w = accepts.width if accepts.width is not None else width
    if (height, width) != (want_h, want_w):
        found.append(Mismatch("shape.spatial", f"is {height}x{width}, not {want_h}x{want_w}"))
    if accepts.channels is not None and channels != accepts.channels:
        plural = "" if channels == 1 else "s"
        found.append(
            Mismatch("shape.channels", f"has {channels} channel{plural}, not {accepts.channels}")
        )
    return found
