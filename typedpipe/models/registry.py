"""Models: a typed `Classifier` over a list of layers, and a registry of named architectures.

Every architecture is declared as data, a list of layer entries exactly like the
`[model] layers` of a `sequential` config, so a named model and a hand-written
one are built, checked and summarised by the same code.
"""

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from flax import nnx
from jaxtyping import Array, Float

from typedpipe.contracts import ConfigError, ContractError, Diagnostic, contract, suggest
from typedpipe.models.layers import LAYERS, Layer, Shape

LayerEntry = dict[str, Any]
Architecture = Callable[[Shape, int, Sequence[LayerEntry]], list[LayerEntry]]

MODELS: dict[str, Architecture] = {}


def register(name: str) -> Callable[[Architecture], Architecture]:
    """Register an architecture (input shape, classes, layers -> layer entries) by name."""

    def add(architecture: Architecture) -> Architecture:
        if name in MODELS:
            raise ValueError(f"model {name!r} is already registered")
        MODELS[name] = architecture
        return architecture

    return add


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


def layer_entries(
    name: str, input_shape: Shape, num_classes: int, layers: Sequence[LayerEntry] = ()
) -> list[LayerEntry]:
    """The layer list of a registered architecture."""
    if name not in MODELS:
        raise ConfigError(
            Diagnostic(
                "config.unknown_model",
                f"no model named {name!r}",
                stage="model",
                expected=" | ".join(sorted(MODELS)),
                got=name,
                hint=f"name = one of {', '.join(sorted(MODELS))} ({suggest(name, MODELS)})",
            )
        )
    return MODELS[name](input_shape, num_classes, layers)


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
        name: a key of `MODELS` ("small_cnn", "lenet", "resnet18", "resnet20", "sequential").
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
    entries = layer_entries(name, input_shape, num_classes, layers)
    built: list[Layer] = []
    shape, flow = tuple(input_shape), [f"input {'x'.join(map(str, input_shape))}"]
    for index, entry in enumerate(entries):
        params = dict(entry)
        kind = params.pop("type", None)
        layer_name = params.pop("name", None) or f"{kind}{index}"
        if kind not in LAYERS:
            raise ConfigError(
                Diagnostic(
                    "config.value",
                    f"[model] layers[{index}]: unknown layer type {kind!r}",
                    stage=f"model.layers[{index}]",
                    expected=" | ".join(sorted(LAYERS)),
                    got=repr(kind),
                    hint=f"type = one of {', '.join(sorted(LAYERS))}",
                )
            )
        layer = LAYERS[kind].build(shape, name=layer_name, rngs=rngs, **params)
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


def _conv(
    features: int, kernel: int = 3, stride: int = 1, padding: str = "same", activation: str = "relu"
) -> LayerEntry:
    return {
        "type": "conv",
        "features": features,
        "kernel": kernel,
        "stride": stride,
        "padding": padding,
        "activation": activation,
    }


@register("small_cnn")
def small_cnn(input_shape: Shape, num_classes: int, layers=()) -> list[LayerEntry]:
    """Three 3x3 conv blocks and a linear head; trains on CPU in seconds."""
    return [
        _conv(32),
        {"type": "batchnorm"},
        _conv(32),
        {"type": "maxpool", "window": 2},
        _conv(64),
        {"type": "batchnorm"},
        _conv(64),
        {"type": "gap"},
        {"type": "dropout", "rate": 0.2},
        {"type": "dense", "features": num_classes},
    ]


@register("lenet")
def lenet(input_shape: Shape, num_classes: int, layers=()) -> list[LayerEntry]:
    """LeNet-5 (LeCun et al., 1998): built for 32x32 inputs; smaller ones collapse."""
    return [
        _conv(6, 5, padding="valid", activation="tanh"),
        {"type": "avgpool", "window": 2},
        _conv(16, 5, padding="valid", activation="tanh"),
        {"type": "avgpool", "window": 2},
        {"type": "flatten"},
        {"type": "dense", "features": 120, "activation": "tanh"},
        {"type": "dense", "features": 84, "activation": "tanh"},
        {"type": "dense", "features": num_classes},
    ]


def _resnet(
    stem: list[LayerEntry], widths: Sequence[int], blocks: int, num_classes: int
) -> list[LayerEntry]:
    entries = list(stem)
    for stage, width in enumerate(widths):
        for block in range(blocks):
            stride = 2 if stage > 0 and block == 0 else 1
            entries.append(
                {
                    "type": "residual",
                    "features": width,
                    "stride": stride,
                    "name": f"stage{stage + 1}.block{block + 1}",
                }
            )
    return [*entries, {"type": "gap"}, {"type": "dense", "features": num_classes}]


@register("resnet20")
def resnet20(input_shape: Shape, num_classes: int, layers=()) -> list[LayerEntry]:
    """ResNet-20 for CIFAR (He et al., 2016): 3 stages of 3 basic blocks, 16/32/64 wide."""
    stem = [_conv(16, activation="none"), {"type": "batchnorm", "activation": "relu"}]
    return _resnet(stem, (16, 32, 64), 3, num_classes)


@register("resnet18")
def resnet18(input_shape: Shape, num_classes: int, layers=()) -> list[LayerEntry]:
    """ResNet-18: 4 stages of 2 basic blocks, 64..512 wide.

    Inputs of 64 px or more get the ImageNet stem (7x7 stride-2 conv, 3x3 max
    pool); smaller ones the CIFAR stem (one 3x3 conv), which would otherwise
    shrink an 8x8 or 32x32 image to nothing.
    """
    if min(input_shape[:2]) >= 64:
        stem = [
            _conv(64, 7, 2, activation="none"),
            {"type": "batchnorm", "activation": "relu"},
            {"type": "maxpool", "window": 3, "stride": 2, "padding": "same"},
        ]
    else:
        stem = [_conv(64, activation="none"), {"type": "batchnorm", "activation": "relu"}]
    return _resnet(stem, (64, 128, 256, 512), 2, num_classes)


@register("sequential")
def sequential(input_shape: Shape, num_classes: int, layers=()) -> list[LayerEntry]:
    """The layers listed under `[model] layers`, as they are."""
    if not layers:
        raise ConfigError(
            Diagnostic(
                "config.value",
                'model "sequential" needs [model] layers',
                stage="model",
                expected="a non-empty layers list",
                got="no layers",
                hint='layers = [{type = "conv", features = 32}, {type = "gap"}, '
                f'{{type = "dense", features = {num_classes}}}]',
            )
        )
    return [dict(entry) for entry in layers]
