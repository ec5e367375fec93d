"""Small models for small inputs: a CNN that trains on CPU in seconds, LeNet-5, and a
model made of the config's own layer list."""

from collections.abc import Sequence

from typedpipe.contracts import ConfigError, Diagnostic
from typedpipe.models.layers import Shape
from typedpipe.models.zoo.entries import LayerEntry, conv


def small_cnn(input_shape: Shape, num_classes: int, layers=()) -> list[LayerEntry]:
    """Three 3x3 conv blocks and a linear head; trains on CPU in seconds."""
    return [
        conv(32),
        {"type": "batchnorm"},
        conv(32),
        {"type": "maxpool", "window": 2},
        conv(64),
        {"type": "batchnorm"},
        conv(64),
        {"type": "gap"},
        {"type": "dropout", "rate": 0.2},
        {"type": "dense", "features": num_classes},
    ]


def lenet(input_shape: Shape, num_classes: int, layers=()) -> list[LayerEntry]:
    """LeNet-5 (LeCun et al., 1998): built for 32x32 inputs; smaller ones collapse."""
    return [
        conv(6, 5, padding="valid", activation="tanh"),
        {"type": "avgpool", "window": 2},
        conv(16, 5, padding="valid", activation="tanh"),
        {"type": "avgpool", "window": 2},
        {"type": "flatten"},
        {"type": "dense", "features": 120, "activation": "tanh"},
        {"type": "dense", "features": 84, "activation": "tanh"},
        {"type": "dense", "features": num_classes},
    ]


def sequential(
    input_shape: Shape, num_classes: int, layers: Sequence[LayerEntry] = ()
) -> list[LayerEntry]:
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
