"""2-D convolution."""

from flax import nnx
from jaxtyping import Array, Float

from typedpipe.contracts import contract
from typedpipe.models.layers.base import (
    ACTIVATIONS,
    Activation,
    Layer,
    Padding,
    Shape,
    Size,
    check_padding,
    out_expr,
    spatial_out,
)
from typedpipe.models.layers.lowering import conv2d
from typedpipe.models.layouts import TensorMap


class Conv(Layer):
    """2-D convolution. `b h w in_features -> b h' w' features`, h' from padding and stride.

    `padding` is "same" or "valid" (XLA's: "same" pads an even total after), or an
    int: that many zeros on every side, as PyTorch's `padding=`, with
    h' = (h + 2 padding - kernel) // stride + 1.
    """

    kind = "conv"

    def __init__(
        self,
        in_features: int,
        features: Size,
        kernel: Size = 3,
        stride: Size = 1,
        padding: Padding = "same",
        activation: Activation = "none",
        use_bias: bool = True,
        *,
        name: str = "conv",
        rngs: nnx.Rngs,
    ):
        check_padding(name, padding, kernel, most=kernel - 1)
        self.activate = ACTIVATIONS.get(activation)
        self.name, self.in_features, self.features = name, in_features, features
        self.kernel, self.stride, self.padding = kernel, stride, padding
        self.activation = activation
        self.rows = out_expr("h", kernel, stride, padding)
        self.cols = out_expr("w", kernel, stride, padding)
        # flax's Conv holds the parameters (their initialisers, their names in
        # checkpoints); the math is `conv2d`, lowered for the backend.
        self.conv = nnx.Conv(
            in_features,
            features,
            (kernel, kernel),
            strides=stride,
            padding=padding.upper() if isinstance(padding, str) else padding,
            use_bias=use_bias,
            rngs=rngs,
        )

    def output_shape(self, shape: Shape) -> Shape:
        self._require_image(shape, self.in_features)
        return (*spatial_out(self, shape, self.kernel, self.stride, self.padding), self.features)

    def flops(self, shape: Shape) -> int:
        height, width, _ = self.output_shape(shape)
        return 2 * height * width * self.kernel**2 * self.in_features * self.features

    def tensors(self) -> list[TensorMap]:
        kernel = TensorMap("weight", ("conv", "kernel"), "oihw_hwio")
        bias = [TensorMap("bias", ("conv", "bias"))] if self.conv.bias is not None else []
        return [kernel, *bias]

    @contract
    def __call__(
        self, x: Float[Array, "b h w {self.in_features}"]
    ) -> Float[Array, "b {self.rows} {self.cols} {self.features}"]:
        self.output_shape(x.shape[1:])
        y = conv2d(x, self.conv.kernel[...], self.stride, self.padding)
        if self.conv.bias is not None:
            y = y + self.conv.bias[...].reshape(1, 1, 1, -1)  # explicit rank: strict promotion
        return self.activate(y)
