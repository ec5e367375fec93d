"""Pooling: max, average, and global average."""

import math
from collections.abc import Callable
from typing import ClassVar

import jax
from flax import nnx
from jaxtyping import Array, Float

from typedpipe.contracts import contract
from typedpipe.models.layers.base import (
    Layer,
    Padding,
    Shape,
    Size,
    check_choice,
    out_expr,
    spatial_out,
)


class _Pool(Layer):
    """Max or average pooling over `window` x `window`, stride defaulting to the window."""

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
        check_choice(name, "padding", padding, ("valid", "same"))
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
        window, stride = (self.window, self.window), (self.stride, self.stride)
        return type(self).reduce(x, window, strides=stride, padding=self.padding.upper())


class MaxPool(_Pool):
    """Max pooling. `b h w c -> b h' w' c`."""

    kind = "maxpool"
    reduce = staticmethod(nnx.max_pool)


def _average_pool(x: Array, window, strides, padding: str) -> Array:
    # flax's avg_pool divides by a NumPy int64, which strict dtype promotion
    # rejects; a Python float divides weakly typed, in the input's dtype.
    total = nnx.pool(x, 0.0, jax.lax.add, window, strides, padding)
    return total / float(math.prod(window))


class AvgPool(_Pool):
    """Average pooling (padding counted, as in flax). `b h w c -> b h' w' c`."""

    kind = "avgpool"
    reduce = staticmethod(_average_pool)


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
