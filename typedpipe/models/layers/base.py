"""The layer contract: typed NNX modules that state their shapes as data and in annotations.

Every layer is channels-last and batched. It states its contract twice: as data
(`output_shape(shape) -> shape`, used by `summary` and `check` without arrays)
and in its `__call__` annotation, which beartype enforces while JAX traces.
A layer that cannot accept its input (a stride or padding that shrinks a map to
nothing) raises a `model.shape` ContractError naming the layer.

A layer's config parameters are its constructor's keyword arguments; their
annotations are the schema the config loader validates each `[model] layers`
entry against, with file and line, before anything is built.
"""

import dataclasses
import inspect
import typing
from collections.abc import Callable
from typing import Annotated, Any, ClassVar

import jax
import jax.numpy as jnp
from beartype.vale import Is
from flax import nnx
from jaxtyping import Array

from typedpipe.contracts import ConfigError, ContractError, Diagnostic, hints
from typedpipe.contracts.diagnostics import config_value, model_shape
from typedpipe.contracts.keys import validate
from typedpipe.models.layouts import TensorMap
from typedpipe.registry import Registry

Shape = tuple[int, ...]


class _Activations(Registry):
    """The activation registry, which also knows the Keras names it spells differently."""

    # Keras activations a port brings along: the name here, and why.
    _KERAS: ClassVar[dict[str, tuple[str, str]]] = {
        "linear": ("none", "Keras's name for no activation"),
        "softmax": ("none", "the loss applies softmax to the logits itself"),
        "log_softmax": ("none", "the loss applies log-softmax to the logits itself"),
        "swish": ("silu", "the same function"),
    }

    def unknown(self, name: object, *, where: str = "", place: str = "") -> Diagnostic:
        diagnostic = super().unknown(name, where=where, place=place)
        if not isinstance(name, str) or name.lower() not in self._KERAS:
            return diagnostic
        ours, why = self._KERAS[name.lower()]
        return dataclasses.replace(
            diagnostic,
            message=f"{diagnostic.message}: {why}",
            hint=f"{self.key} = {hints.toml(ours)} {hints.at(place or self.table)} ({why})",
        )


#: Activations a layer's `activation` can name.
ACTIVATIONS: Registry[Callable[[Array], Array]] = _Activations(
    "activation", key="activation", table="[model] layers", code="config.unknown_name"
)
for _name, _fn in (
    ("none", lambda x: x),
    ("relu", jax.nn.relu),
    ("gelu", jax.nn.gelu),
    ("silu", jax.nn.silu),
    ("tanh", jnp.tanh),
    ("sigmoid", jax.nn.sigmoid),
    ("elu", jax.nn.elu),
    ("leaky_relu", jax.nn.leaky_relu),
    ("softplus", jax.nn.softplus),
):
    ACTIVATIONS.register(_name, _fn)

# Parameter types with their range: beartype checks them when the config is
# parsed; a trailing string is how a message names the type, and a Registry in
# the metadata means "a name registered there" (an unknown one gets "did you mean").
PositiveInt = Annotated[int, Is[lambda n: n > 0], "an int > 0"]
# A size a layer allocates from (features, kernel, stride, window): bounded, so that
# no value overflows a shape or an abstract build.
Size = Annotated[int, Is[lambda n: 0 < n <= 65536], "an int in [1, 65536]"]
Rate = Annotated[float, Is[lambda r: 0.0 <= r < 1.0], "a number in [0, 1)"]
#: Pixels of zeros added on every side of an image (`padding = 3`, as PyTorch's
#: `padding=3`), beside XLA's "same" and "valid".
Pixels = Annotated[int, Is[lambda n: 0 <= n <= 65536], "an int in [0, 65536]"]
Padding = typing.Literal["same", "valid"] | Pixels
Activation = Annotated[str, ACTIVATIONS]

#: Every layer type a `[model] layers` entry can name.
LAYERS: "Registry[type[Layer]]" = Registry(
    "layer type", key="type", table="[model] layers", code="config.unknown_name"
)

#: Where a layer's own hint says "this layer": `build_model` names the entry
#: (`[model] layers[3] (conv)`), since a layer does not know its position.
THIS_LAYER = "this layer"

# Constructor arguments a config never sets: the builder supplies them.
_SUPPLIED = ("self", "in_features", "rngs", "name")


def register_layer(cls: "type[Layer]") -> "type[Layer]":
    """Make a layer class usable from a config as `{type = cls.kind, ...}`.

    Its constructor's keyword arguments (other than `in_features`, taken from the
    previous layer, `name` and `rngs`) become the entry's keys, checked against
    their annotations when the config is parsed.
    """
    LAYERS.register(cls.kind, cls)
    return cls


def dims(shape: Shape) -> str:
    return "x".join(str(d) for d in shape)


def out_size(size: int, kernel: int, stride: int, padding: str | int) -> int:
    """Output length of a window sliding over `size` (PyTorch's formula for an int padding)."""
    if padding == "same":
        return -(-size // stride)
    if padding == "valid":
        return (size - kernel) // stride + 1
    return (size + 2 * int(padding) - kernel) // stride + 1


def out_expr(axis: str, kernel: int, stride: int, padding: str | int) -> str:
    """`out_size` as a jaxtyping symbolic dimension over the named input axis."""
    if padding == "same":
        return f"({axis}+{stride - 1})//{stride}"
    if padding == "valid":
        return f"({axis}-{kernel})//{stride}+1"
    return f"({axis}{2 * int(padding) - kernel:+d})//{stride}+1"


def check_choice(layer: str, key: str, value: object, choices: tuple[str, ...]) -> None:
    """A `config.value` error unless `value` is one of `choices` (for layers built in Python)."""
    if value not in choices:
        raise ConfigError(
            config_value(
                f"{layer}: {key} must be one of {', '.join(map(repr, choices))}",
                stage=layer,
                expected=" | ".join(map(repr, choices)),
                got=f"{key} = {value!r}",
                hint=f'{key} = "{choices[0]}"',
            )
        )


def check_padding(
    layer: str,
    padding: object,
    kernel: int,
    most: int,
    choices: tuple[str, ...] = ("same", "valid"),
) -> None:
    """A `config.value` error unless `padding` is one of `choices` or pixels in [0, most].

    `most` is the widest padding whose every window still reaches the image: a wider
    one adds outputs computed from zeros alone (PyTorch refuses it for pooling).
    """
    if not isinstance(padding, int) or isinstance(padding, bool):
        check_choice(layer, "padding", padding, choices)
        return
    if not 0 <= padding <= most:
        raise ConfigError(
            config_value(
                f"{layer}: padding {padding} on a {kernel}x{kernel} window must be in [0, {most}]",
                stage=layer,
                expected=f"{' | '.join(map(repr, choices))} or an int in [0, {most}]",
                got=f"padding = {padding}",
                hint=f"padding = {kernel // 2} in {THIS_LAYER}",
            )
        )


class Layer(nnx.Module):
    """Base of the typed layers. `kind` is the config `type` that builds it."""

    kind: ClassVar[str]
    name: str

    @classmethod
    def params(cls) -> dict[str, tuple[Any, bool]]:
        """The config keys of this layer: each one's annotation, and whether it is required."""
        signature = inspect.signature(cls.__init__)
        annotations = typing.get_type_hints(cls.__init__, include_extras=True)
        return {
            name: (annotations.get(name, Any), parameter.default is inspect.Parameter.empty)
            for name, parameter in signature.parameters.items()
            if name not in _SUPPLIED and parameter.kind is not inspect.Parameter.VAR_KEYWORD
        }

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """The config keys that have a default, and that default."""
        signature = inspect.signature(cls.__init__)
        return {
            name: parameter.default
            for name, parameter in signature.parameters.items()
            if name not in _SUPPLIED and parameter.default is not inspect.Parameter.empty
        }

    @classmethod
    def build(cls, in_shape: Shape, *, name: str, rngs: nnx.Rngs, **params: Any) -> "Layer":
        """Construct from config parameters, taking the input channels from `in_shape`.

        Raises:
            ConfigError: an unknown key, or a value of the wrong type or range.
        """
        values, found = validate(
            cls.params(),
            params,
            where=f"[model] layer {name} ({cls.kind})",
            defaults=cls.defaults(),
        )
        if found:
            raise ConfigError(found)
        return cls.construct(in_shape, name=name, rngs=rngs, **values)

    @classmethod
    def construct(cls, in_shape: Shape, *, name: str, rngs: nnx.Rngs, **params: Any) -> "Layer":
        """Construct from parameters already validated against `params()`."""
        if "in_features" in inspect.signature(cls.__init__).parameters:
            params["in_features"] = in_shape[-1]
        # Each layer's constructor has its own parameters, and all take name and rngs.
        init: Callable[..., Layer] = cls
        return init(**params, name=name, rngs=rngs)

    def output_shape(self, shape: Shape) -> Shape:
        """The per-image output shape for a per-image input shape, or a ContractError."""
        raise NotImplementedError

    def flops(self, shape: Shape) -> int:
        """Floating-point operations per image for an input of `shape` (2 per multiply-add)."""
        return 0

    def tensors(self) -> list[TensorMap]:
        """Where each tensor of a PyTorch state dict goes in this layer (see `TensorMap`):
        the file names are relative to the layer's `name`. A layer without weights has none."""
        return []

    def _reject(self, shape: Shape, message: str, expected: str, hint: str):
        got = f"b {' '.join(map(str, shape))}"
        raise ContractError(
            model_shape(message, stage=self.name, expected=expected, got=got, hint=hint)
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


def spatial_out(layer: Layer, shape: Shape, kernel: int, stride: int, padding: str | int) -> Shape:
    height, width = shape[0], shape[1]
    out = (out_size(height, kernel, stride, padding), out_size(width, kernel, stride, padding))
    if min(out) < 1:
        if isinstance(padding, str):
            window, least = f"{padding!r} window", kernel
        else:
            window, least = f"window padded by {padding}", kernel - 2 * padding
        layer._reject(
            shape,
            f"a {kernel}x{kernel} {window} with stride {stride} "
            f"shrinks {height}x{width} to {out[0]}x{out[1]}",
            f"b h w c with h, w >= {least}",
            f'padding = "same" in {THIS_LAYER}, or a smaller kernel or stride, fewer '
            "downsampling layers, or a larger [model] input",
        )
    return out
