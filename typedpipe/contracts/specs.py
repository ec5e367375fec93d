"""Contracts as data: what an image batch or a label batch looks like at a boundary."""

import dataclasses
from typing import Literal

Layout = Literal["nhwc", "nchw"]
LabelFormat = Literal["int", "onehot"]

FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")

#: The most classes a model head (and so a label) may have: class names, one-hot
#: rows and the head are sized from it, so a label id past it is no class id.
MAX_CLASSES = 100_000


@dataclasses.dataclass(frozen=True)
class ImageSpec:
    """The per-image contract of a batch: its shape, dtype, value range and layout.

    The batch axis is implicit: a spec describes one image. `value_range` is the
    (min, max) the values are known to lie in (None: unknown, as for a traced
    batch), so that a stage can say what
    range it hands on and the model can refuse values it was not built for.

    Example:
        >>> ImageSpec(8, 8, 1, "uint8", (0.0, 255.0)).shape
        (8, 8, 1)
    """

    height: int
    width: int
    channels: int
    dtype: str = "float32"
    value_range: tuple[float, float] | None = (0.0, 1.0)
    layout: Layout = "nhwc"

    @property
    def shape(self) -> tuple[int, ...]:
        """The stored per-image shape, in this spec's layout."""
        if self.layout == "nchw":
            return (self.channels, self.height, self.width)
        return (self.height, self.width, self.channels)

    @property
    def is_float(self) -> bool:
        return self.dtype in FLOAT_DTYPES

    def describe(self) -> str:
        """`uint8 b 8 8 1 in [0, 255]`: the form diagnostics and summaries print."""
        dims = " ".join(str(d) for d in self.shape)
        if self.value_range is None:
            return f"{self.dtype} b {dims}"
        lo, hi = self.value_range
        return f"{self.dtype} b {dims} in [{lo:g}, {hi:g}]"


@dataclasses.dataclass(frozen=True)
class LabelSpec:
    """The contract of a label batch: integer class ids or one-hot rows.

    Example:
        >>> LabelSpec("int", 10).describe()
        'int32 b in [0, 10)'
    """

    format: LabelFormat
    num_classes: int

    def describe(self) -> str:
        if self.format == "onehot":
            return f"float32 b {self.num_classes} (one-hot)"
        return f"int32 b in [0, {self.num_classes})"
