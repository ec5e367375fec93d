"""The typed `Classifier` and the one way to build it: layer entries flowed shape by shape."""

import dataclasses
from collections.abc import Sequence

from flax import nnx
from jaxtyping import Array, Float

from typedpipe.contracts import ConfigError, ContractError, Diagnostic, contract
from typedpipe.contracts.keys import validate
from typedpipe.models.layers import LAYERS, Layer, Shape
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
        return None, {}, [LAYERS.unknown(kind, where=line("layers") or where)]
    cls = LAYERS.get(kind)
    values, found = validate(cls.params(), params, where=f"{where} ({kind})", line=line)
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


def build_model(
    name: str,
    input_shape: Shape,
    num_classes: int,
    layers: Sequence[LayerEntry] = (),
    *,
    rngs: nnx.Rngs,
) -> Classifier:
    """Build a registered model, flowing the input shape through every layer.

    Args:
        name: a registered model ("small_cnn", "lenet", "resnet18", "resnet20", "sequential").
        input_shape: (height, width, channels) of the images the model accepts.
        num_classes: size of the output logits.
        layers: the layer entries, for "sequential".
        rngs: parameter initialisation randomness.

    Returns:
        The classifier. Wrap in `nnx.eval_shape` to build it without allocating.

    Raises:
        ConfigError: unknown model, layer type or layer parameter.
        ContractError: a layer cannot accept its input (`model.shape`).

    Example:
        >>> model = build_model("small_cnn", (8, 8, 1), 10, rngs=nnx.Rngs(0))
    """
    entries = MODELS.get(name)(input_shape, num_classes, layers)
    built: list[Layer] = []
    shape, flow = tuple(input_shape), [f"input {'x'.join(map(str, input_shape))}"]
    for index, entry in enumerate(entries):
        cls, params, faults = validate_entry(entry, index)
        if faults or cls is None:
            raise ConfigError(faults)
        layer_name = params.pop("name")
        layer = cls.construct(shape, name=layer_name, rngs=rngs, **params)
        try:
            shape = layer.output_shape(shape)
        except ContractError as err:
            raise ContractError(
                dataclasses.replace(d, message=f"{d.message} (shapes so far: {' -> '.join(flow)})")
                for d in err.diagnostics
            ) from None
        flow.append(f"{layer_name} {'x'.join(map(str, shape))}")
        built.append(layer)
    if shape != (num_classes,):
        raise ContractError(
            Diagnostic(
                "model.shape",
                f"the last layer outputs {'x'.join(map(str, shape))}, not one logit per class",
                stage=flow[-1].split()[0],
                expected=f"b {num_classes}",
                got=f"b {' '.join(map(str, shape))}",
                hint=f'end [model] layers with {{type = "dense", features = {num_classes}}}',
            )
        )
    return Classifier(built, input_shape, num_classes)
