"""torchvision's ResNet blocks: the basic block and the bottleneck (ResNet v1.5).

Each block is torchvision's module, layer for layer and name for name, so a
file of torchvision weights loads into it: convs and batch norms named
`<block>.conv1`, `<block>.bn1`, ..., and a projection shortcut
`<block>.downsample.0` (1x1 conv, stride s, no bias) and `<block>.downsample.1`
(batch norm) where the identity cannot carry the shape across. Every 3x3 conv
pads 1 pixel on every side, as torchvision's, not XLA's "same".
"""

import math
from typing import ClassVar

import jax
from flax import nnx
from jaxtyping import Array, Float

from typedpipe.contracts import ConfigError, contract
from typedpipe.contracts.diagnostics import config_value
from typedpipe.models.layers.base import THIS_LAYER, Layer, Shape, Size, out_expr
from typedpipe.models.layers.conv import Conv
from typedpipe.models.layers.norm import BatchNorm
from typedpipe.models.layouts import TensorMap


class _Block(Layer):
    """A chain of (conv, batch norm) pairs, ReLU between them, plus a shortcut, then ReLU.

    `b h w in_features -> b h' w' features`, h' = (h - 1) // stride + 1.
    """

    def _chain(
        self,
        name: str,
        in_features: int,
        features: int,
        stride: int,
        convs: list[tuple[int, int, int, int]],
        rngs: nnx.Rngs,
    ) -> None:
        """Build the blocks's layers; `convs` lists (in, out, kernel, stride) per conv."""
        self.name, self.in_features, self.features, self.stride = (
            name,
            in_features,
            features,
            stride,
        )
        self.rows, self.cols = out_expr("h", 3, stride, 1), out_expr("w", 3, stride, 1)
        last = len(convs)
        self.convs = nnx.List(
            Conv(c_in, c_out, k, s, k // 2, use_bias=False, name=f"{name}.conv{i}", rngs=rngs)
            for i, (c_in, c_out, k, s) in enumerate(convs, start=1)
        )
        self.norms = nnx.List(
            BatchNorm(
                c_out,
                activation="relu" if i < last else "none",
                name=f"{name}.bn{i}",
                rngs=rngs,
            )
            for i, (_, c_out, _, _) in enumerate(convs, start=1)
        )
        # torchvision's `downsample`: a projection only where the identity cannot
        # carry the shape across; empty otherwise.
        downsample: list[Layer] = []
        if stride != 1 or in_features != features:
            downsample = [
                Conv(
                    in_features,
                    features,
                    1,
                    stride,
                    0,
                    use_bias=False,
                    name=f"{name}.downsample.0",
                    rngs=rngs,
                ),
                BatchNorm(features, name=f"{name}.downsample.1", rngs=rngs),
            ]
        self.downsample = nnx.List(downsample)

    def output_shape(self, shape: Shape) -> Shape:
        for conv in self.convs:
            shape = conv.output_shape(shape)
        return shape

    def flops(self, shape: Shape) -> int:
        total, x = 0, shape
        for conv, norm in zip(self.convs, self.norms, strict=True):
            total += conv.flops(x)
            x = conv.output_shape(x)
            total += norm.flops(x)
        y = shape
        for layer in self.downsample:
            total += layer.flops(y)
            y = layer.output_shape(y)
        return total + 2 * math.prod(x)  # the sum and the final ReLU

    def tensors(self) -> list[TensorMap]:
        # Each sub-layer is named `<block>.<torchvision's module path>`: its file
        # names are that path's, below the block's name.
        maps: list[TensorMap] = []
        for attribute in ("convs", "norms", "downsample"):
            for index, layer in enumerate(getattr(self, attribute)):
                module = layer.name.removeprefix(f"{self.name}.")
                maps.extend(
                    TensorMap(f"{module}.{m.source}", (attribute, index, *m.target), m.layout)
                    for m in layer.tensors()
                )
        return maps

    @contract
    def __call__(
        self, x: Float[Array, "b h w {self.in_features}"]
    ) -> Float[Array, "b {self.rows} {self.cols} {self.features}"]:
        y = x
        for conv, norm in zip(self.convs, self.norms, strict=True):
            y = norm(conv(y))
        shortcut = x
        for layer in self.downsample:
            shortcut = layer(shortcut)
        return jax.nn.relu(y + shortcut)


class BasicBlock(_Block):
    """torchvision's `BasicBlock` (ResNet-18/34): 3x3 conv, stride on the first, then 3x3.

    `b h w in_features -> b h' w' features`, h' = (h - 1) // stride + 1.

    Example:
        >>> block = BasicBlock(64, 128, stride=2, name="layer2.0", rngs=nnx.Rngs(0))
        >>> block.output_shape((56, 56, 64))
        (28, 28, 128)
    """

    kind = "basic_block"

    def __init__(
        self,
        in_features: int,
        features: Size,
        stride: Size = 1,
        *,
        name: str = "basic_block",
        rngs: nnx.Rngs,
    ):
        convs = [(in_features, features, 3, stride), (features, features, 3, 1)]
        self._chain(name, in_features, features, stride, convs, rngs)


class Bottleneck(_Block):
    """torchvision's `Bottleneck` (ResNet-50 and deeper, v1.5): 1x1 down to `width`,
    3x3 with the stride, 1x1 up to `features`.

    `b h w in_features -> b h' w' features`, h' = (h - 1) // stride + 1.

    `features` is the block's output, as every layer's; torchvision's `planes` is
    `width`, by default `features // 4` (its expansion of 4; wide ResNets set more).

    Example:
        >>> block = Bottleneck(64, 256, name="layer1.0", rngs=nnx.Rngs(0))
        >>> block.output_shape((56, 56, 64)), block.width
        ((56, 56, 256), 64)
    """

    kind = "bottleneck"
    expansion: ClassVar[int] = 4

    def __init__(
        self,
        in_features: int,
        features: Size,
        stride: Size = 1,
        width: Size | None = None,
        *,
        name: str = "bottleneck",
        rngs: nnx.Rngs,
    ):
        if width is None and features < self.expansion:
            raise ConfigError(
                config_value(
                    f"{name}: features {features} leave no width for the bottleneck "
                    f"(features // {self.expansion})",
                    stage=name,
                    expected=f"features >= {self.expansion}, or a width",
                    got=f"features = {features}",
                    hint=f"features = {self.expansion * 64} in {THIS_LAYER}",
                )
            )
        self.width = width if width is not None else features // self.expansion
        convs = [
            (in_features, self.width, 1, 1),
            (self.width, self.width, 3, stride),
            (self.width, features, 1, 1),
        ]
        self._chain(name, in_features, features, stride, convs, rngs)
