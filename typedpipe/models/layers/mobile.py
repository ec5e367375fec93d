"""The mobile networks' blocks: convolution + batch norm, squeeze-and-excitation, and the
inverted residual (MobileNetV3's bottleneck, EfficientNet's MBConv).

Each is torchvision's module of the same structure (`Conv2dNormActivation`,
`SqueezeExcitation`, `InvertedResidual` / `MBConv`): the same padding
(`(kernel - 1) // 2` zeros on every side, not XLA's "same", which pads a
stride-2 window on one side only), the same layers in the same order, and the
same sub-layer names (`block.0`, `block.1`, ...), so that a torchvision file's
tensors map onto them by name.
"""

import math
from typing import Annotated

from beartype.vale import Is
from flax import nnx
from jaxtyping import Array, Float

from typedpipe.contracts import ConfigError, contract
from typedpipe.contracts.diagnostics import config_value
from typedpipe.models.layers.base import (
    ACTIVATIONS,
    THIS_LAYER,
    Activation,
    Epsilon,
    Layer,
    Rate,
    Shape,
    Size,
)
from typedpipe.models.layers.lowering import conv2d
from typedpipe.models.layouts import TensorMap

# The squeeze-and-excitation width of a block, 0 for none.
Squeeze = Annotated[int, Is[lambda n: 0 <= n <= 65536], "an int in [0, 65536]"]


def _padded_size(size: int, kernel: int, stride: int) -> int:
    """torch's output size for `(kernel - 1) // 2` zeros on every side."""
    return (size + 2 * ((kernel - 1) // 2) - kernel) // stride + 1


def _padded_expr(axis: str, kernel: int, stride: int) -> str:
    """`_padded_size` as a jaxtyping symbolic dimension over the named input axis."""
    return f"({axis}-{kernel - 2 * ((kernel - 1) // 2)})//{stride}+1"


class ConvNormAct(Layer):
    """Convolution (no bias), batch norm, activation: torchvision's `Conv2dNormActivation`.

    `b h w in_features -> b h' w' features`, h' = (h - 1) // stride + 1 for an odd kernel.
    `groups` splits the channels into groups convolved apart (`groups = in_features =
    features`: depthwise). Its tensors: `0.weight` (the convolution), `1.weight`,
    `1.bias`, `1.running_mean`, `1.running_var` (the batch norm).
    """

    kind = "conv_bn"

    def __init__(
        self,
        in_features: int,
        features: Size,
        kernel: Size = 3,
        stride: Size = 1,
        groups: Size = 1,
        activation: Activation = "relu",
        epsilon: Epsilon = 1e-5,
        momentum: Rate = 0.9,
        *,
        name: str = "conv_bn",
        rngs: nnx.Rngs,
    ):
        if in_features % groups or features % groups:
            raise ConfigError(
                config_value(
                    f"{name}: groups = {groups} must divide the input's {in_features} channels "
                    f"and the {features} features",
                    stage=name,
                    expected=f"groups dividing {in_features} and {features}",
                    got=f"groups = {groups}",
                    hint=f"groups = {math.gcd(in_features, features)} in {THIS_LAYER}",
                )
            )
        self.activate = ACTIVATIONS.get(activation)
        self.name, self.in_features, self.features = name, in_features, features
        self.kernel, self.stride, self.groups = kernel, stride, groups
        self.activation, self.padding = activation, (kernel - 1) // 2
        self.rows, self.cols = _padded_expr("h", kernel, stride), _padded_expr("w", kernel, stride)
        pads = ((self.padding, self.padding),) * 2
        self.conv = nnx.Conv(
            in_features,
            features,
            (kernel, kernel),
            strides=stride,
            padding=pads,
            feature_group_count=groups,
            use_bias=False,
            rngs=rngs,
        )
        self.norm = nnx.BatchNorm(features, momentum=momentum, epsilon=epsilon, rngs=rngs)

    def output_shape(self, shape: Shape) -> Shape:
        self._require_image(shape, self.in_features)
        height, width = (_padded_size(size, self.kernel, self.stride) for size in shape[:2])
        if min(height, width) < 1:
            self._reject(
                shape,
                f"a {self.kernel}x{self.kernel} window with {self.padding} padding and stride "
                f"{self.stride} shrinks {shape[0]}x{shape[1]} to {height}x{width}",
                f"b h w {self.in_features} with h, w >= {self.kernel - 2 * self.padding}",
                f"a larger [model] input, or an odd kernel in {THIS_LAYER}",
            )
        return (height, width, self.features)

    def flops(self, shape: Shape) -> int:
        height, width, _ = self.output_shape(shape)
        per_output = self.kernel**2 * (self.in_features // self.groups)
        return 2 * height * width * self.features * per_output + 2 * height * width * self.features

    def tensors(self) -> list[TensorMap]:
        if self.groups == 1:
            layout = "oihw_hwio"
        elif self.groups == self.in_features == self.features:
            layout = "depthwise"
        else:
            layout = "grouped"
        # torchvision's Sequential: the convolution is module 0, the batch norm module 1.
        return [
            TensorMap("0.weight", ("conv", "kernel"), layout),
            TensorMap("1.weight", ("norm", "scale")),
            TensorMap("1.bias", ("norm", "bias")),
            TensorMap("1.running_mean", ("norm", "mean")),
            TensorMap("1.running_var", ("norm", "var")),
        ]

    @contract
    def __call__(
        self, x: Float[Array, "b h w {self.in_features}"]
    ) -> Float[Array, "b {self.rows} {self.cols} {self.features}"]:
        self.output_shape(x.shape[1:])
        y = conv2d(x, self.conv.kernel[...], self.stride, self.padding, self.groups)
        return self.activate(self.norm(y))


class SqueezeExcite(Layer):
    """Squeeze-and-excitation (Hu et al., 2018): torchvision's `SqueezeExcitation`.

    `b h w in_features -> b h w in_features`: each channel scaled by
    `gate(fc2(activation(fc1(mean over h, w))))`, fc1 and fc2 1x1 convolutions
    with bias (`fc1.weight`, `fc1.bias`, `fc2.weight`, `fc2.bias`).
    """

    kind = "squeeze_excite"

    def __init__(
        self,
        in_features: int,
        squeeze: Size,
        activation: Activation = "relu",
        gate: Activation = "sigmoid",
        *,
        name: str = "squeeze_excite",
        rngs: nnx.Rngs,
    ):
        self.activate, self.scale = ACTIVATIONS.get(activation), ACTIVATIONS.get(gate)
        self.name, self.features, self.squeeze = name, in_features, squeeze
        self.activation, self.gate = activation, gate
        self.fc1 = nnx.Conv(in_features, squeeze, (1, 1), rngs=rngs)
        self.fc2 = nnx.Conv(squeeze, in_features, (1, 1), rngs=rngs)

    def output_shape(self, shape: Shape) -> Shape:
        self._require_image(shape, self.features)
        return shape

    def flops(self, shape: Shape) -> int:
        self.output_shape(shape)
        # The mean, both 1x1 convolutions, and the scaling.
        return 2 * math.prod(shape) + 4 * self.features * self.squeeze

    def tensors(self) -> list[TensorMap]:
        return [
            TensorMap(f"{fc}.{tensor}", (fc, target), layout)
            for fc in ("fc1", "fc2")
            for tensor, target, layout in (
                ("weight", "kernel", "oihw_hwio"),
                ("bias", "bias", "identity"),
            )
        ]

    @contract
    def __call__(
        self, x: Float[Array, "b h w {self.features}"]
    ) -> Float[Array, "b h w {self.features}"]:
        pooled = x.mean(axis=(1, 2), keepdims=True)
        return x * self.scale(self.fc2(self.activate(self.fc1(pooled))))


class InvertedResidual(Layer):
    """The inverted residual (Sandler et al., 2018), with MobileNetV3's and EfficientNet's
    squeeze-and-excitation: torchvision's `InvertedResidual` and `MBConv`.

    `b h w in_features -> b h' w' features`, h' = (h - 1) // stride + 1 for an odd kernel.
    `block`: a 1x1 expansion to `expand` channels (left out when `expand` equals
    `in_features`), a depthwise `kernel` x `kernel` convolution with `stride`, a
    squeeze-and-excitation `squeeze` wide (left out at 0) and a 1x1 projection
    without activation. The input is added back where the shape allows (stride 1,
    `in_features == features`), after stochastic depth (`drop_path`: the whole
    block dropped for a sample with that probability in training; identity in eval).
    """

    kind = "inverted_residual"

    def __init__(
        self,
        in_features: int,
        features: Size,
        expand: Size,
        kernel: Size = 3,
        stride: Size = 1,
        activation: Activation = "relu",
        squeeze: Squeeze = 0,
        se_activation: Activation = "relu",
        se_gate: Activation = "sigmoid",
        drop_path: Rate = 0.0,
        epsilon: Epsilon = 1e-5,
        momentum: Rate = 0.9,
        *,
        name: str = "inverted_residual",
        rngs: nnx.Rngs,
    ):
        if kernel % 2 == 0:
            # An even kernel's padding shrinks the map by one, and the sum with the input fails.
            raise ConfigError(
                config_value(
                    f"{name}: an inverted residual's kernel must be odd, got {kernel}",
                    stage=name,
                    expected="kernel = 3, 5, 7, ...",
                    got=f"kernel = {kernel}",
                    hint=f"kernel = {kernel + 1} in {THIS_LAYER}",
                )
            )
        self.name, self.in_features, self.features = name, in_features, features
        self.expand, self.stride = expand, stride
        self.rows, self.cols = _padded_expr("h", kernel, stride), _padded_expr("w", kernel, stride)
        layers: list[Layer] = []

        def conv(
            width_in: int, width: int, kernel: int, stride: int, groups: int, activation: str
        ) -> Layer:
            where = f"{name}.block.{len(layers)}"
            return ConvNormAct(
                width_in,
                width,
                kernel,
                stride,
                groups,
                activation,
                epsilon,
                momentum,
                name=where,
                rngs=rngs,
            )

        if expand != in_features:
            layers.append(conv(in_features, expand, 1, 1, 1, activation))
        layers.append(conv(expand, expand, kernel, stride, expand, activation))
        if squeeze:
            where = f"{name}.block.{len(layers)}"
            layers.append(
                SqueezeExcite(expand, squeeze, se_activation, se_gate, name=where, rngs=rngs)
            )
        layers.append(conv(expand, features, 1, 1, 1, "none"))
        self.block = nnx.List(layers)
        self.residual = stride == 1 and in_features == features
        # Dropout of whole samples: the mask broadcast over h, w and c, kept ones scaled
        # by 1 / (1 - drop_path), as torchvision's StochasticDepth("row").
        self.drop_path = nnx.Dropout(drop_path, broadcast_dims=(1, 2, 3), rngs=rngs)

    def output_shape(self, shape: Shape) -> Shape:
        self._require_image(shape, self.in_features)
        for layer in self.block:
            shape = layer.output_shape(shape)
        return shape

    def flops(self, shape: Shape) -> int:
        total = 0
        for layer in self.block:
            total += layer.flops(shape)
            shape = layer.output_shape(shape)
        return total + (math.prod(shape) if self.residual else 0)

    def tensors(self) -> list[TensorMap]:
        return [
            TensorMap(f"block.{index}.{m.source}", ("block", index, *m.target), m.layout, m.part)
            for index, layer in enumerate(self.block)
            for m in layer.tensors()
        ]

    @contract
    def __call__(
        self, x: Float[Array, "b h w {self.in_features}"]
    ) -> Float[Array, "b {self.rows} {self.cols} {self.features}"]:
        self.output_shape(x.shape[1:])
        y = x
        for layer in self.block:
            y = layer(y)
        return x + self.drop_path(y) if self.residual else y
