"""The ConvNeXt block (Liu et al., 2022, "A ConvNet for the 2020s"), as torchvision builds it.

A ConvNeXt's stem and downsampling layers are a `conv` and a `layernorm`; only
its block is a layer of its own.
"""

from typing import Annotated

import jax
import jax.numpy as jnp
from beartype.vale import Is
from flax import nnx
from jaxtyping import Array, Float

from typedpipe.contracts import contract
from typedpipe.models.layers.base import Layer, Rate, Shape
from typedpipe.models.layers.norm import layer_norm, layer_norm_tensors, normalised
from typedpipe.models.layouts import TensorMap

#: A layer scale's initial value: torchvision starts every block at 1e-6.
LayerScale = Annotated[float, Is[lambda s: 0.0 < s <= 1.0], "a number in (0, 1]"]

# torchvision's initialisation of every ConvNeXt convolution and linear layer.
_INIT = nnx.initializers.truncated_normal(stddev=0.02)


class ConvNeXtBlock(Layer):
    """A depthwise 7x7 convolution, layer norm, a 4x wide GELU MLP, layer scale, and the
    residual; in training a whole block is dropped per image with `drop_path` (stochastic
    depth), and the survivors scaled up to keep the mean.

    `b h w in_features -> b h w in_features`.
    """

    kind = "convnext_block"

    def __init__(
        self,
        in_features: int,
        layer_scale: LayerScale = 1e-6,
        drop_path: Rate = 0.0,
        *,
        name: str = "convnext_block",
        rngs: nnx.Rngs,
    ):
        self.name, self.features = name, in_features
        self.layer_scale, self.drop_path = layer_scale, drop_path
        wide = 4 * in_features
        # One 7x7 filter per channel (feature_group_count): a kernel of 7 x 7 x 1 x features.
        self.depthwise = nnx.Conv(
            in_features,
            in_features,
            (7, 7),
            padding=3,
            feature_group_count=in_features,
            kernel_init=_INIT,
            rngs=rngs,
        )
        self.norm = layer_norm(in_features, rngs)
        self.expand = nnx.Linear(in_features, wide, kernel_init=_INIT, rngs=rngs)
        self.project = nnx.Linear(wide, in_features, kernel_init=_INIT, rngs=rngs)
        self.scale = nnx.Param(jnp.full((in_features,), layer_scale, jnp.float32))
        # The mask is one draw per image, shared by every pixel and channel: torchvision's
        # StochasticDepth(mode="row"). Identity in evaluation.
        self.dropped = nnx.Dropout(drop_path, broadcast_dims=(1, 2, 3), rngs=rngs)

    def output_shape(self, shape: Shape) -> Shape:
        self._require_image(shape, self.features)
        return shape

    def flops(self, shape: Shape) -> int:
        self.output_shape(shape)
        pixels = shape[0] * shape[1]
        depthwise = 2 * pixels * 7 * 7 * self.features
        mlp = 2 * 2 * pixels * self.features * 4 * self.features
        # Layer norm (5 per element), GELU (~8 per hidden element), scale and residual (2).
        elementwise = pixels * (5 * self.features + 8 * 4 * self.features + 2 * self.features)
        return depthwise + mlp + elementwise

    def tensors(self) -> list[TensorMap]:
        # torchvision's CNBlock: `block` is Sequential(conv, permute, norm, linear, GELU,
        # linear, permute), so its parameters are block.0, .2, .3 and .5.
        return [
            TensorMap("block.0.weight", ("depthwise", "kernel"), "depthwise"),
            TensorMap("block.0.bias", ("depthwise", "bias")),
            *layer_norm_tensors("norm", "block.2."),
            TensorMap("block.3.weight", ("expand", "kernel"), "linear"),
            TensorMap("block.3.bias", ("expand", "bias")),
            TensorMap("block.5.weight", ("project", "kernel"), "linear"),
            TensorMap("block.5.bias", ("project", "bias")),
            TensorMap("layer_scale", ("scale",), "channels_11"),
        ]

    @contract
    def __call__(
        self, x: Float[Array, "b h w {self.features}"]
    ) -> Float[Array, "b h w {self.features}"]:
        self.output_shape(x.shape[1:])
        y = normalised(self.norm, self.depthwise(x))
        # torch's nn.GELU is the exact (erf) one; jax's default is the tanh approximation.
        y = self.project(jax.nn.gelu(self.expand(y), approximate=False))
        y = y * self.scale[...].reshape(1, 1, 1, -1)  # explicit rank: strict promotion
        return x + self.dropped(y)
