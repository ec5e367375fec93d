"""Typed Flax NNX layers: shapes stated in the annotation, output sizes from padding and stride.

Every layer is channels-last and batched. It states its contract twice: as data
(`output_shape(shape) -> shape`, used by `summary` and `check` without arrays)
and in its `__call__` annotation, which beartype enforces while JAX traces.
A layer that cannot accept its input (a stride or padding that shrinks a map to
nothing) raises a `model.shape` ContractError naming the layer.
"""

import inspect
import math
from collections.abc import Callable
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Float

from typedpipe.contracts import ConfigError, ContractError, Diagnostic, contract, unknown_keys

Shape = tuple[int, ...]

ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "none": lambda x: x,
    "relu": jax.nn.relu,
    "gelu": jax.nn.gelu,
    "silu": jax.nn.silu,
    "tanh": jnp.tanh,
}

LAYERS: dict[str, type["Layer"]] = {}


def register(cls: type["Layer"]) -> type["Layer"]:
    """Register a layer class under its config `type`; a type registers once."""
    if cls.kind in LAYERS:
        raise ValueError(f"layer type {cls.kind!r} is already registered")
    LAYERS[cls.kind] = cls
    return cls


def _dims(shape: Shape) -> str:
    return "x".join(str(d) for d in shape)


def _config_error(layer: str, message: str, expected: str, got: str, hint: str) -> ConfigError:
    return ConfigError(
        Diagnostic("config.value", message, stage=layer, expected=expected, got=got, hint=hint)
    )


def _out_size(size: int, kernel: int, stride: int, padding: str) -> int:
    if padding == "same":
        return -(-size // stride)
    return (size - kernel) // stride + 1


def _out_expr(axis: str, kernel: int, stride: int, padding: str) -> str:
    """`_out_size` as a jaxtyping symbolic dimension over the named input axis."""
    if padding == "same":
        return f"({axis}+{stride - 1})//{stride}"
    return f"({axis}-{kernel})//{stride}+1"


class Layer(nnx.Module):
    """Base of the typed layers. `kind` is the config `type` that builds it."""

    kind: ClassVar[str]
    name: str

    @classmethod
    def build(cls, in_shape: Shape, *, name: str, rngs: nnx.Rngs, **params: Any) -> "Layer":
        """Construct from a config entry, taking the input channels from `in_shape`."""
        signature = inspect.signature(cls.__init__)
        own = [p for p in signature.parameters if p not in ("self", "in_features", "rngs", "name")]
        errors = unknown_keys(params, own, f"[model] layer {name} ({cls.kind})")
        if errors:
            raise ConfigError(errors)
        if "in_features" in signature.parameters:
            params["in_features"] = in_shape[-1]
        try:
            # Each layer's constructor has its own parameters, and all take name and rngs.
            construct: Callable[..., Layer] = cls
            return construct(**params, name=name, rngs=rngs)
        except TypeError as err:
            raise _config_error(
                name,
                f"{cls.kind} layer {name}: {err}",
                str(signature),
                str(params),
                f"see the {cls.kind} layer's parameters",
            ) from None

    def output_shape(self, shape: Shape) -> Shape:
        """The per-image output shape for a per-image input shape, or a ContractError."""
        raise NotImplementedError

    def flops(self, shape: Shape) -> int:
        """Floating-point operations per image for an input of `shape` (2 per multiply-add)."""
        return 0

    def _reject(self, shape: Shape, message: str, expected: str, hint: str):
        raise ContractError(
            Diagnostic(
                "model.shape",
                message,
                stage=self.name,
                expected=expected,
                got=f"b {' '.join(map(str, shape))}",
                hint=hint,
            )
        )

    def _require_image(self, shape: Shape, channels: int | None = None) -> None:
        want = f"b h w {channels if channels is not None else 'c'}"
        if len(shape) != 3:
            self._reject(
                shape,
                f"{self.name} needs an image (h w c), got {len(shape)} axes",
                want,
                "remove the flatten/dense layer before it",
            )
        if channels is not None and shape[-1] != channels:
            self._reject(
                shape,
                f"{self.name} needs {channels} channels, got {shape[-1]}",
                want,
                f"make the previous layer output {channels} features",
            )


def _spatial_out(layer: Layer, shape: Shape, kernel: int, stride: int, padding: str) -> Shape:
    height, width = shape[0], shape[1]
    out = (_out_size(height, kernel, stride, padding), _out_size(width, kernel, stride, padding))
    if min(out) < 1:
        layer._reject(
            shape,
            f"a {kernel}x{kernel} {padding!r} window with stride {stride} "
            f"shrinks {height}x{width} to {out[0]}x{out[1]}",
            f"b h w c with h, w >= {kernel}",
            'use padding = "same", a smaller kernel or stride, fewer downsampling layers, '
            "or a larger [model] input",
        )
    return out


@register
class Conv(Layer):
    """2-D convolution. `b h w in_features -> b h' w' features`, h' from padding and stride."""

    kind = "conv"

    def __init__(
        self,
        in_features: int,
        features: int,
        kernel: int = 3,
        stride: int = 1,
        padding: str = "same",
        activation: str = "none",
        use_bias: bool = True,
        *,
        name: str = "conv",
        rngs: nnx.Rngs,
    ):
        if padding not in ("same", "valid"):
            raise _config_error(
                name,
                f"conv {name}: unknown padding {padding!r}",
                '"same" | "valid"',
                repr(padding),
                'padding = "same"',
            )
        if activation not in ACTIVATIONS:
            raise _config_error(
                name,
                f"conv {name}: unknown activation {activation!r}",
                " | ".join(ACTIVATIONS),
                repr(activation),
                'activation = "relu"',
            )
        self.name, self.in_features, self.features = name, in_features, features
        self.kernel, self.stride, self.padding = kernel, stride, padding
        self.activation = activation
        self.rows = _out_expr("h", kernel, stride, padding)
        self.cols = _out_expr("w", kernel, stride, padding)
        self.conv = nnx.Conv(
            in_features,
            features,
            (kernel, kernel),
            strides=stride,
            padding=padding.upper(),
            use_bias=use_bias,
            rngs=rngs,
        )

    def output_shape(self, shape: Shape) -> Shape:
        self._require_image(shape, self.in_features)
        return (*_spatial_out(self, shape, self.kernel, self.stride, self.padding), self.features)

    def flops(self, shape: Shape) -> int:
        height, width, _ = self.output_shape(shape)
        return 2 * height * width * self.kernel**2 * self.in_features * self.features

    @contract
    def __call__(
        self, x: Float[Array, "b h w {self.in_features}"]
    ) -> Float[Array, "b {self.rows} {self.cols} {self.features}"]:
        self.output_shape(x.shape[1:])
        return ACTIVATIONS[self.activation](self.conv(x))


class _Pool(Layer):
    """Max or average pooling over `window` x `window`, stride defaulting to the window."""

    reduce: ClassVar[Callable[..., Array]]

    def __init__(
        self,
        window: int = 2,
        stride: int | None = None,
        padding: str = "valid",
        *,
        name: str = "pool",
        rngs: nnx.Rngs,
    ):
        del rngs  # Pooling has no parameters.
        if padding not in ("same", "valid"):
            raise _config_error(
                name,
                f"{self.kind} {name}: unknown padding {padding!r}",
                '"same" | "valid"',
                repr(padding),
                'padding = "valid"',
            )
        self.name, self.window, self.padding = name, window, padding
        self.stride = stride or window
        self.rows = _out_expr("h", window, self.stride, padding)
        self.cols = _out_expr("w", window, self.stride, padding)

    def output_shape(self, shape: Shape) -> Shape:
        self._require_image(shape)
        return (*_spatial_out(self, shape, self.window, self.stride, self.padding), shape[-1])

    def flops(self, shape: Shape) -> int:
        height, width, channels = self.output_shape(shape)
        return height * width * channels * self.window**2

    @contract
    def __call__(self, x: Float[Array, "b h w c"]) -> Float[Array, "b {self.rows} {self.cols} c"]:
        self.output_shape(x.shape[1:])
        window, stride = (self.window, self.window), (self.stride, self.stride)
        return type(self).reduce(x, window, strides=stride, padding=self.padding.upper())


@register
class MaxPool(_Pool):
    """Max pooling. `b h w c -> b h' w' c`."""

    kind = "maxpool"
    reduce = staticmethod(nnx.max_pool)


def _average_pool(x: Array, window, strides, padding: str) -> Array:
    # flax's avg_pool divides by a NumPy int64, which strict dtype promotion
    # rejects; a Python float divides weakly typed, in the input's dtype.
    total = nnx.pool(x, 0.0, jax.lax.add, window, strides, padding)
    return total / float(math.prod(window))


@register
class AvgPool(_Pool):
    """Average pooling (padding counted, as in flax). `b h w c -> b h' w' c`."""

    kind = "avgpool"
    reduce = staticmethod(_average_pool)


@register
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


@register
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


@register
class Dense(Layer):
    """Fully connected. `b in_features -> b features`."""

    kind = "dense"

    def __init__(
        self,
        in_features: int,
        features: int,
        activation: str = "none",
        use_bias: bool = True,
        *,
        name: str = "dense",
        rngs: nnx.Rngs,
    ):
        if activation not in ACTIVATIONS:
            raise _config_error(
                name,
                f"dense {name}: unknown activation {activation!r}",
                " | ".join(ACTIVATIONS),
                repr(activation),
                'activation = "relu"',
            )
        self.name, self.in_features, self.features = name, in_features, features
        self.activation = activation
        self.linear = nnx.Linear(in_features, features, use_bias=use_bias, rngs=rngs)

    def output_shape(self, shape: Shape) -> Shape:
        if len(shape) != 1:
            self._reject(
                shape,
                f"{self.name} needs flat features, got {_dims(shape)}",
                f"b {self.in_features}",
                'add {type = "flatten"} or {type = "gap"} before it',
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

    @contract
    def __call__(
        self, x: Float[Array, "b {self.in_features}"]
    ) -> Float[Array, "b {self.features}"]:
        return ACTIVATIONS[self.activation](self.linear(x))


@register
class BatchNorm(Layer):
    """Batch normalisation over b, h, w. `b h w features -> b h w features`."""

    kind = "batchnorm"

    def __init__(
        self,
        in_features: int,
        momentum: float = 0.9,
        activation: str = "none",
        *,
        name: str = "batchnorm",
        rngs: nnx.Rngs,
    ):
        self.name, self.features, self.activation = name, in_features, activation
        self.norm = nnx.BatchNorm(in_features, momentum=momentum, rngs=rngs)

    def output_shape(self, shape: Shape) -> Shape:
        self._require_image(shape, self.features)
        return shape

    def flops(self, shape: Shape) -> int:
        return 2 * math.prod(shape)

    @contract
    def __call__(
        self, x: Float[Array, "b h w {self.features}"]
    ) -> Float[Array, "b h w {self.features}"]:
        return ACTIVATIONS[self.activation](self.norm(x))


@register
class Dropout(Layer):
    """Dropout, active only in training mode. `b *rest -> b *rest`."""

    kind = "dropout"

    def __init__(self, rate: float = 0.5, *, name: str = "dropout", rngs: nnx.Rngs):
        if not 0.0 <= rate < 1.0:
            raise _config_error(
                name,
                f"dropout {name}: rate must be in [0, 1)",
                "0 <= rate < 1",
                f"rate = {rate}",
                "rate = 0.5",
            )
        self.name = name
        self.dropout = nnx.Dropout(rate, rngs=rngs)

    def output_shape(self, shape: Shape) -> Shape:
        return shape

    @contract
    def __call__(self, x: Float[Array, "b *rest"]) -> Float[Array, "b *rest"]:  # noqa: F821
        return self.dropout(x)


@register
class Residual(Layer):
    """ResNet basic block: two 3x3 convs with batch norm, plus a (projected) shortcut.

    `b h w in_features -> b h' w' features`, h' = ceil(h / stride).
    """

    kind = "residual"

    def __init__(
        self,
        in_features: int,
        features: int,
        stride: int = 1,
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
        self.rows, self.cols = _out_expr("h", 3, stride, "same"), _out_expr("w", 3, stride, "same")
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

    @contract
    def __call__(
        self, x: Float[Array, "b h w {self.in_features}"]
    ) -> Float[Array, "b {self.rows} {self.cols} {self.features}"]:
        y = self.norm2(self.conv2(self.norm1(self.conv1(x))))
        shortcut = self.shortcut(x) if self.shortcut is not None else x
        return jax.nn.relu(y + shortcut)
