"""Normalisation: batch norm (over the batch) and layer norm (over features)."""

import math

import jax
from flax import nnx
from jaxtyping import Array, Float

from typedpipe.contracts import contract
from typedpipe.models.layers.base import ACTIVATIONS, Activation, Layer, Rate, Shape
from typedpipe.models.layouts import TensorMap


class BatchNorm(Layer):
    """Batch normalisation over b, h, w. `b h w features -> b h w features`."""

    kind = "batchnorm"

    def __init__(
        self,
        in_features: int,
        momentum: Rate = 0.9,
        activation: Activation = "none",
        *,
        name: str = "batchnorm",
        rngs: nnx.Rngs,
    ):
        self.name, self.features, self.activation = name, in_features, activation
        self.activate = ACTIVATIONS.get(activation)
        self.norm = nnx.BatchNorm(in_features, momentum=momentum, rngs=rngs)

    def output_shape(self, shape: Shape) -> Shape:
        self._require_image(shape, self.features)
        return shape

    def flops(self, shape: Shape) -> int:
        return 2 * math.prod(shape)

    def tensors(self) -> list[TensorMap]:
        # PyTorch's names; its `num_batches_tracked` counter is no weight (see weights.IGNORED).
        return [
            TensorMap("weight", ("norm", "scale")),
            TensorMap("bias", ("norm", "bias")),
            TensorMap("running_mean", ("norm", "mean")),
            TensorMap("running_var", ("norm", "var")),
        ]

    @contract
    def __call__(
        self, x: Float[Array, "b h w {self.features}"]
    ) -> Float[Array, "b h w {self.features}"]:
        return self.activate(self.norm(x))


#: torchvision's ConvNeXt and ViT and timm's ViT all normalise with this epsilon.
LAYER_NORM_EPSILON = 1e-6


def layer_norm(features: int, rngs: nnx.Rngs) -> nnx.LayerNorm:
    """flax's LayerNorm as torch computes it: epsilon 1e-6, the variance in two passes
    (flax's default, E[x^2] - E[x]^2, loses digits where the mean is large)."""
    return nnx.LayerNorm(features, epsilon=LAYER_NORM_EPSILON, use_fast_variance=False, rngs=rngs)


def normalised(norm: nnx.LayerNorm, x: Array) -> Array:
    """`norm(x)`. flax computes the statistics of bfloat16 or float16 input in float32
    by promoting the two dtypes, which strict promotion refuses. Inputs and parameters of
    one dtype give that dtype back."""
    with jax.numpy_dtype_promotion("standard"):
        return norm(x)


def layer_norm_tensors(attribute: str, prefix: str = "") -> list[TensorMap]:
    """A flax LayerNorm held as `attribute`, from torch's `weight` and `bias` under `prefix`."""
    return [
        TensorMap(f"{prefix}weight", (attribute, "scale")),
        TensorMap(f"{prefix}bias", (attribute, "bias")),
    ]


class LayerNorm(Layer):
    """Layer normalisation over the last axis: per pixel (channels-last) or per token.

    `b *rest in_features -> b *rest in_features`.
    """

    kind = "layernorm"

    def __init__(self, in_features: int, *, name: str = "layernorm", rngs: nnx.Rngs):
        self.name, self.features = name, in_features
        self.norm = layer_norm(in_features, rngs)

    def output_shape(self, shape: Shape) -> Shape:
        if not shape or shape[-1] != self.features:
            self._reject(
                shape,
                f"{self.name} normalises {self.features} features, got "
                f"{'x'.join(map(str, shape)) or 'none'}",
                f"b ... {self.features}",
                f"make the previous layer output {self.features} features",
            )
        return shape

    def flops(self, shape: Shape) -> int:
        # The mean, the variance, normalising, scale and shift: about 5 per element.
        return 5 * math.prod(shape)

    def tensors(self) -> list[TensorMap]:
        return layer_norm_tensors("norm")

    @contract
    def __call__(
        self,
        x: Float[Array, "b *rest {self.features}"],
    ) -> Float[Array, "b *rest {self.features}"]:
        return normalised(self.norm, x)
