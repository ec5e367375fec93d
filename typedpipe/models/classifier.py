"""The typed `Classifier` and the one way to build it: layer entries flowed shape by shape."""

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from flax import nnx
from jaxtyping import Array, Float

from typedpipe.contracts import ConfigError, ContractError, Diagnostic, contract
from typedpipe.contracts.keys import validate
from typedpipe.models.layers import LAYERS, Layer, Shape
from typedpipe.models.layers.base import THIS_LAYER
from typedpipe.models.zoo import MODELS, LayerEntry


class Classifier(nnx.Module):
    """An image classifier: `b height width channels` floats in, `b num_classes` logits out.

    The annotation on `__call__` is the model's input contract: a batch of the
    wrong size, channel count or dtype is a ContractError when JAX traces.
    """

    name = "model"

    def __init__(self, layers: Sequence[Layer], input_shape: Shape, num_classes: int):
        self.height, self.width, self.channels = input_shape
        self.num_classes = num_classes
        self.layers = nnx.List(layers)

    @contract
    def __call__(
        self, images: Float[Array, "b {self.height} {self.width} {self.channels}"]
    ) -> Float[Array, "b {self.num_classes}"]:
        x = images
        for layer in self.layers:
            x = layer(x)
        return x


def split_params(model: nnx.Module) -> tuple[nnx.GraphDef, nnx.State, nnx.State]:
    """A model's graph, its parameters, and the rest of its state (batch statistics, RNG)."""
    graph, *states = nnx.split(model, nnx.Param, ...)
    params, rest = states
    return graph, params, rest


def validate_entry(
    entry: object, index: int, line=lambda key: ""
) -> tuple[type[Layer] | None, dict, list[Diagnostic]]:
    """One `[model] layers` entry against its layer's constructor: the class, the
    validated parameters (with `name`), and every fault found."""
    where = f"[model] layers[{index}]"
    if not isinstance(entry, dict):
        return (
            None,
            {},
            [
                Diagnostic(
                    "config.value",
                    f'{where} must be a table like {{type = "conv", features = 32}}',
                    stage=where,
                    expected="an inline table",
                    got=repr(entry),
                    hint='{type = "conv", features = 32}',
                )
            ],
        )
    params = dict(entry)
    kind = params.pop("type", None)
    name = params.pop("name", None)
    if kind not in LAYERS:
        return None, {}, [LAYERS.unknown(kind, where=line("layers") or where, place=where)]
    cls = LAYERS.get(kind)
    values, found = validate(
        cls.params(), params, where=f"{where} ({kind})", line=line, defaults=cls.defaults()
    )
    if name is not None and not isinstance(name, str):
        found.append(
            Diagnostic(
                "config.value",
                f"{where}: name must be a string",
                stage=where,
                expected="a string",
                got=f"name = {name!r}",
                hint=f'name = "{kind}{index}"',
            )
        )
    return cls, {**values, "name": name if isinstance(name, str) else f"{kind}{index}"}, found


def _place(model: str, index: int, entry: object) -> str:
    """How a hint names a layer: its `[model] layers` entry, where the config wrote it."""
    if model != "sequential" or not isinstance(entry, dict):
        return ""
    return f"[model] layers[{index}] ({entry.get('type')})"


def _other_model(model: str) -> str:
    """The fix for a named architecture too deep for its input: one that fits any input."""
    if model == "small_cnn":
        return "a larger [model] input: small_cnn needs at least 2x2"
    return (
        f'name = "small_cnn" under [model] (it takes any input of 2x2 or more), or a larger '
        f"[model] input for {model}"
    )


# Layers after the logits layer that pass its values on unchanged (in evaluation).
_PASS_THROUGH = ("dropout", "flatten")


def logits_layer(entries: Sequence[object]) -> int | None:
    """The index of the entry whose output is the logits: the last one, past any dropout
    or flatten; None when that layer takes no activation (a pooling layer, say)."""
    for index in range(len(entries) - 1, -1, -1):
        entry = entries[index]
        kind = entry.get("type") if isinstance(entry, dict) else None
        if kind in _PASS_THROUGH:
            continue
        if kind in LAYERS and "activation" in LAYERS.get(kind).params():
            return index
        return None
    return None


def logits_activation(entries: Sequence[object]) -> Diagnostic | None:
    """`config.value` when the logits layer applies an activation: the loss applies
    softmax to the logits, so the last layer must leave them as they are."""
    index = logits_layer(entries)
    if index is None:
        return None
    entry = entries[index]
    assert isinstance(entry, dict)
    activation = entry.get("activation", "none")
    if activation == "none":
        return None
    where = f"[model] layers[{index}] ({entry['type']})"
    why = (
        "so it would be applied twice"
        if activation in ("softmax", "log_softmax")
        else f"and {activation!r} would squash or clip them first"
    )
    return Diagnostic(
        "config.value",
        f"the last layer applies activation {activation!r} to the logits: the loss applies "
        f"softmax to the logits itself, {why}",
        stage=where,
        expected='activation = "none" on the last layer',
        got=f"activation = {activation!r}",
        hint=f'activation = "none" in {where}',
    )


def build_model(
    name: str,
    input_shape: Shape,
    num_classes: int,
    layers: Sequence[LayerEntry] = (),
    *,
    weights: str | Path | None = None,
    rngs: nnx.Rngs,
) -> Classifier:
    """Build a registered model, flowing the input shape through every layer.

    Args:
        name: a registered model ("small_cnn", "lenet", "resnet18", "resnet20", "sequential").
        input_shape: (height, width, channels) of the images the model accepts.
        num_classes: size of the output logits.
        layers: the layer entries, for "sequential".
        weights: a safetensors state dict (as torchvision and timm save it) or a
            typedpipe bundle folder (`runs/<name>/model`) to start from; where only
            the head's class count differs, the head is new (see `models.weights`).
        rngs: parameter initialisation randomness.

    Returns:
        The classifier. Wrap in `nnx.eval_shape` to build it without allocating
        (without `weights`: they are read into real arrays).

    Raises:
        ConfigError: unknown model, layer type or layer parameter.
        ContractError: a layer cannot accept its input (`model.shape`); a weights
            file that does not fit (`weights.mismatch`) or cannot be read
            (`weights.missing`, `weights.format`, `weights.corrupt`).

    Example:
        >>> import jax.numpy as jnp
        >>> model = build_model("small_cnn", (8, 8, 1), 10, rngs=nnx.Rngs(0))
        >>> model.eval()  # inference: batch statistics read, dropout off
        >>> model(jnp.zeros((2, 8, 8, 1))).shape
        (2, 10)
        >>> abstract = nnx.eval_shape(
        ...     lambda: build_model("resnet18", (224, 224, 3), 1000, rngs=nnx.Rngs(0))
        ... )
        >>> abstract.layers[0].conv.kernel.shape  # the ImageNet stem, nothing allocated
        (7, 7, 3, 64)
    """
    entries = MODELS.get(name)(input_shape, num_classes, layers)
    built: list[Layer] = []
    shape, flow = tuple(input_shape), [f"input {'x'.join(map(str, input_shape))}"]
    for index, entry in enumerate(entries):
        cls, params, faults = validate_entry(entry, index)
        if faults or cls is None:
            raise ConfigError(faults)
        layer_name = params.pop("name")
        try:
            layer = cls.construct(shape, name=layer_name, rngs=rngs, **params)
        except ConfigError as err:  # a value the schema admits but this input or kernel does not
            place = _place(name, index, entry) or f"layer {layer_name}"
            raise ConfigError(
                dataclasses.replace(d, hint=d.hint.replace(THIS_LAYER, place))
                for d in err.diagnostics
            ) from None
        try:
            shape = layer.output_shape(shape)
        except ContractError as err:
            place = _place(name, index, entry)
            raise ContractError(
                dataclasses.replace(
                    d,
                    message=f"{d.message} (shapes so far: {' -> '.join(flow)})",
                    hint=d.hint.replace(THIS_LAYER, place) if place else _other_model(name),
                )
                for d in err.diagnostics
            ) from None
        flow.append(f"{layer_name} {'x'.join(map(str, shape))}")
        built.append(layer)
    if shape != (num_classes,):
        last = entries[-1] if entries else {}
        if len(shape) == 1 and isinstance(last, dict) and last.get("type") == "dense":
            hint = f"features = {num_classes} in [model] layers[{len(entries) - 1}] (dense)"
        else:
            hint = f'add {{type = "dense", features = {num_classes}}} at the end of [model] layers'
        raise ContractError(
            Diagnostic(
                "model.shape",
                f"the last layer outputs {'x'.join(map(str, shape))}, not one logit per class",
                stage=flow[-1].split()[0],
                expected=f"b {num_classes}",
                got=f"b {' '.join(map(str, shape))}",
                hint=hint,
            )
        )
    model = Classifier(built, input_shape, num_classes)
    if weights is not None:
        from typedpipe.models.weights import load_weights  # safetensors, only when asked for

        load_weights(model, weights, what=f"model {name!r}")
    return model
