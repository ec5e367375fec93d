"""Batch normalisation."""

import math

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
