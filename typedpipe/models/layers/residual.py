"""The ResNet basic block."""

import math

import jax
from flax import nnx
from jaxtyping import Array, Float

from typedpipe.contracts import contract
from typedpipe.models.layers.base import Layer, Shape, Size, out_expr
from typedpipe.models.layers.conv import Conv
from typedpipe.models.layers.norm import BatchNorm
from typedpipe.models.layouts import TensorMap, nested


class Residual(Layer):
    """ResNet basic block: two 3x3 convs with batch norm, plus a (projected) shortcut.

    `b h w in_features -> b h' w' features`, h' = ceil(h / stride).
    """

    kind = "residual"

    def __init__(
        self,
        in_features: int,
        features: Size,
        stride: Size = 1,
        *,
        name: str = "residual",
        rngs: nnx.Rngs,
    ):
        self.name, self.in_features, self.features, self.stride = (
            name,
            in_features,
            features,
            stride,
        )
        self.rows, self.cols = out_expr("h", 3, stride, "same"), out_expr("w", 3, stride, "same")
        self.conv1 = Conv(
            in_features, features, 3, stride, use_bias=False, name=f"{name}.conv1", rngs=rngs
        )
        self.norm1 = BatchNorm(features, activation="relu", name=f"{name}.bn1", rngs=rngs)
        self.conv2 = Conv(features, features, 3, 1, use_bias=False, name=f"{name}.conv2", rngs=rngs)
        self.norm2 = BatchNorm(features, name=f"{name}.bn2", rngs=rngs)
        # A 1x1 projection only where the identity cannot carry the shape across.
        shortcut = None
        if stride != 1 or in_features != features:
            shortcut = Conv(
                in_features, features, 1, stride, use_bias=False, name=f"{name}.shortcut", rngs=rngs
            )
        self.shortcut = nnx.data(shortcut)

    def output_shape(self, shape: Shape) -> Shape:
        return self.conv1.output_shape(shape)

    def flops(self, shape: Shape) -> int:
        mid = self.output_shape(shape)
        total = self.conv1.flops(shape) + self.conv2.flops(mid) + 4 * math.prod(mid)
        return total + (self.shortcut.flops(shape) if self.shortcut else 0)

    def tensors(self) -> list[TensorMap]:
        # Its sub-layers' names (`conv1`, `bn1`, ...) as a PyTorch block names its modules.
        parts = [("conv1", "conv1"), ("bn1", "norm1"), ("conv2", "conv2"), ("bn2", "norm2")]
        if self.shortcut is not None:
            parts.append(("shortcut", "shortcut"))
        return [
            m
            for prefix, attribute in parts
            for m in nested(prefix, attribute, getattr(self, attribute).tensors())
        ]

    @contract
    def __call__(
        self, x: Float[Array, "b h w {self.in_features}"]
    ) -> Float[Array, "b {self.rows} {self.cols} {self.features}"]:
        y = self.norm2(self.conv2(self.norm1(self.conv1(x))))
        shortcut = self.shortcut(x) if self.shortcut is not None else x
        return jax.nn.relu(y + shortcut)
