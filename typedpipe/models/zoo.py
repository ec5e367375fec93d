"""Named architectures, each declared as data: the layer entries of a `sequential` model.

A named model and a hand-written one are therefore built, checked and
summarised by the same code. `register_model` adds one usable from a config.
"""

from collections.abc import Callable, Sequence
from typing import Any

from typedpipe.contracts import ConfigError, Diagnostic
from typedpipe.models.layers import Shape
from typedpipe.registry import Registry

LayerEntry = dict[str, Any]
#: (input shape, number of classes, the config's `layers`) -> layer entries.
Architecture = Callable[[Shape, int, Sequence[LayerEntry]], list[LayerEntry]]

#: Every model a config can name: `[model] name = "..."`.
MODELS: Registry[Architecture] = Registry(
    "model", key="name", table="model", code="config.unknown_model"
)


def register_model(name: str) -> Callable[[Architecture], Architecture]:
    """Make an architecture usable from a config as `[model] name = "<name>"`.

    Example:
        >>> @register_model("tiny")
        ... def tiny(input_shape, num_classes, layers=()):
        ...     return [{"type": "gap"}, {"type": "dense", "features": num_classes}]
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from typedpipe.models import build_model
        >>> model = build_model("tiny", (8, 8, 3), 5, rngs=nnx.Rngs(0))
        >>> model(jnp.ones((2, 8, 8, 3))).shape
        (2, 5)
    """
    return MODELS.register(name)


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


@register_model("small_cnn")
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


@register_model("lenet")
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


@register_model("resnet20")
def resnet20(input_shape: Shape, num_classes: int, layers=()) -> list[LayerEntry]:
    """ResNet-20 for CIFAR (He et al., 2016): 3 stages of 3 basic blocks, 16/32/64 wide."""
    stem = [_conv(16, activation="none"), {"type": "batchnorm", "activation": "relu"}]
    return _resnet(stem, (16, 32, 64), 3, num_classes)


@register_model("resnet18")
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


@register_model("sequential")
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
                f'{{type = "dense", features = {num_classes}}}] under [model]',
            )
        )
    return [dict(entry) for entry in layers]
