"""Flatten, dense and dropout: the layers of a classifier head."""

import math

from flax import nnx
from jaxtyping import Array, Float

from typedpipe.contracts import ConfigError, contract
from typedpipe.contracts.diagnostics import config_value
from typedpipe.models.layers.base import (
    ACTIVATIONS,
    THIS_LAYER,
    Activation,
    Layer,
    Rate,
    Shape,
    Size,
    dims,
)
from typedpipe.models.layouts import TensorMap


class Flatten(Layer):
    """Flatten each image. `b h w c -> b h*w*c`."""

    kind = "flatten"

    def __init__(self, *, name: str = "flatten", rngs: nnx.Rngs):
        del rngs
        self.name = name

    def output_shape(self, shape: Shape) -> Shape:
        self._require_image(shape)
        return (math.prod(shape),)

    @contract
    def __call__(self, x: Float[Array, "b h w c"]) -> Float[Array, "b h*w*c"]:
        return x.reshape(x.shape[0], -1)


class Dense(Layer):
    """Fully connected. `b in_features -> b features`."""

    kind = "dense"

    def __init__(
        self,
        in_features: int,
        features: Size,
        activation: Activation = "none",
        use_bias: bool = True,
        *,
        name: str = "dense",
        rngs: nnx.Rngs,
    ):
        self.activate = ACTIVATIONS.get(activation)
        self.name, self.in_features, self.features = name, in_features, features
        self.activation = activation
        self.linear = nnx.Linear(in_features, features, use_bias=use_bias, rngs=rngs)

    def output_shape(self, shape: Shape) -> Shape:
        if len(shape) != 1:
            self._reject(
                shape,
                f"{self.name} needs flat features, got {dims(shape)}",
                f"b {self.in_features}",
                f'add {{type = "flatten"}} before {THIS_LAYER} (or {{type = "gap"}})',
            )
        if shape[0] != self.in_features:
            self._reject(
                shape,
                f"{self.name} needs {self.in_features} features",
                f"b {self.in_features}",
                "match the previous layer's features",
            )
        return (self.features,)

    def flops(self, shape: Shape) -> int:
        return 2 * self.in_features * self.features

    def tensors(self) -> list[TensorMap]:
        kernel = TensorMap("weight", ("linear", "kernel"), "linear")
        bias = [TensorMap("bias", ("linear", "bias"))] if self.linear.bias is not None else []
        return [kernel, *bias]

    @contract
    def __call__(
        self, x: Float[Array, "b {self.in_features}"]
    ) -> Float[Array, "b {self.features}"]:
        return self.activate(self.linear(x))


class Dropout(Layer):
    """Dropout, active only in training mode. `b *rest -> b *rest`."""

    kind = "dropout"

    def __init__(self, rate: Rate = 0.5, *, name: str = "dropout", rngs: nnx.Rngs):
        if not 0.0 <= rate < 1.0:
            raise ConfigError(
                config_value(
                    f"dropout {name}: rate must be in [0, 1)",
                    stage=name,
                    expected="0 <= rate < 1",
                    got=f"rate = {rate}",
                    hint="rate = 0.5",
                )
            )
        self.name = name
        self.dropout = nnx.Dropout(rate, rngs=rngs)

    def output_shape(self, shape: Shape) -> Shape:
        return shape

    @contract
    def __call__(self, x: Float[Array, "b *rest"]) -> Float[Array, "b *rest"]:  # noqa: F821
        return self.dropout(x)
