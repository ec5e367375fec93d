"""Pooling: max, average, and global average."""

import math
from collections.abc import Callable
from typing import ClassVar

from flax import nnx
from jaxtyping import Array, Float

from typedpipe.contracts import contract
from typedpipe.models.layers.base import (
    Layer,
    Padding,
    Shape,
    Size,
    check_padding,
    out_expr,
    spatial_out,
)
from typedpipe.models.layers.lowering import avg_pool, max_pool


class _Pool(Layer):
    """Max or average pooling over `window` x `window`, stride defaulting to the window.

    `padding` is "valid", "same", or an int of at most `window // 2` pixels on every
    side (PyTorch's `padding=`; its bound too, so that every window holds a pixel).
    """

    reduce: ClassVar[Callable[..., Array]]

    def __init__(
        self,
        window: Size = 2,
        stride: Size | None = None,
        padding: Padding = "valid",
        *,
        name: str = "pool",
        rngs: nnx.Rngs,
    ):
        del rngs  # Pooling has no parameters.
        check_padding(name, padding, window, window // 2, ("valid", "same"))
        self.name, self.window, self.padding = name, window, padding
        self.stride = stride or window
        self.rows = out_expr("h", window, self.stride, padding)
        self.cols = out_expr("w", window, self.stride, padding)

    def output_shape(self, shape: Shape) -> Shape:
        self._require_image(shape)
        return (*spatial_out(self, shape, self.window, self.stride, self.padding), shape[-1])

    def flops(self, shape: Shape) -> int:
        height, width, channels = self.output_shape(shape)
        return height * width * channels * self.window**2

    @contract
    def __call__(self, x: Float[Array, "b h w c"]) -> Float[Array, "b {self.rows} {self.cols} c"]:
        self.output_shape(x.shape[1:])
        return type(self).reduce(x, self.window, self.stride, self.padding)


class MaxPool(_Pool):
    """Max pooling. `b h w c -> b h' w' c`."""

    kind = "maxpool"
    reduce = staticmethod(max_pool)


class AvgPool(_Pool):
    """Average pooling (padding counted, as in flax). `b h w c -> b h' w' c`."""

    kind = "avgpool"
    reduce = staticmethod(avg_pool)


class GlobalAvgPool(Layer):
    """Mean over height and width. `b h w c -> b c`."""

    kind = "gap"

    def __init__(self, *, name: str = "gap", rngs: nnx.Rngs):
        del rngs
        self.name = name

    def output_shape(self, shape: Shape) -> Shape:
        self._require_image(shape)
        return (shape[-1],)

    def flops(self, shape: Shape) -> int:
        return math.prod(shape)

    @contract
    def __call__(self, x: Float[Array, "b h w c"]) -> Float[Array, "b c"]:
        return x.mean(axis=(1, 2))
