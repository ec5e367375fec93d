"""MobileNetV3 (Howard et al., 2019), small and large, as torchvision builds them.

Layer names are torchvision's module names (`features.0` ... `classifier.3`), so
that a torchvision file's tensors map onto them by name. Built for 224 px; any
input of `MIN_SIZE` px or more is accepted (`require_input`).
"""

from collections.abc import Sequence

from typedpipe.contracts import ContractError
from typedpipe.contracts.diagnostics import model_shape
from typedpipe.models.layers import Shape
from typedpipe.models.zoo.entries import LayerEntry

#: The smallest input side: five stride-2 stages bring 32 px down to 1x1. Smaller
#: inputs would not fail (torch's padding keeps a map at 1x1), but the last
#: stride-2 layers would read padding, not the image.
MIN_SIZE = 32

# torchvision's batch norm for MobileNetV3: eps 1e-3, torch momentum 0.01 (flax's 0.99).
_NORM = {"epsilon": 1e-3, "momentum": 0.99}

# (input channels, kernel, expanded channels, output channels, squeeze-and-excitation,
#  activation, stride): the MobileNetV3 paper's Tables 1 and 2, as torchvision lists them.
_LARGE = (
    (16, 3, 16, 16, False, "relu", 1),
    (16, 3, 64, 24, False, "relu", 2),
    (24, 3, 72, 24, False, "relu", 1),
    (24, 5, 72, 40, True, "relu", 2),
    (40, 5, 120, 40, True, "relu", 1),
    (40, 5, 120, 40, True, "relu", 1),
    (40, 3, 240, 80, False, "hardswish", 2),
    (80, 3, 200, 80, False, "hardswish", 1),
    (80, 3, 184, 80, False, "hardswish", 1),
    (80, 3, 184, 80, False, "hardswish", 1),
    (80, 3, 480, 112, True, "hardswish", 1),
    (112, 3, 672, 112, True, "hardswish", 1),
    (112, 5, 672, 160, True, "hardswish", 2),
    (160, 5, 960, 160, True, "hardswish", 1),
    (160, 5, 960, 160, True, "hardswish", 1),
)
_SMALL = (
    (16, 3, 16, 16, True, "relu", 2),
    (16, 3, 72, 24, False, "relu", 2),
    (24, 3, 88, 24, False, "relu", 1),
    (24, 5, 96, 40, True, "hardswish", 2),
    (40, 5, 240, 40, True, "hardswish", 1),
    (40, 5, 240, 40, True, "hardswish", 1),
    (40, 5, 120, 48, True, "hardswish", 1),
    (48, 5, 144, 48, True, "hardswish", 1),
    (48, 5, 288, 96, True, "hardswish", 2),
    (96, 5, 576, 96, True, "hardswish", 1),
    (96, 5, 576, 96, True, "hardswish", 1),
)


def make_divisible(value: float, divisor: int = 8) -> int:
    """`value` rounded to the nearest multiple of `divisor` (at least `divisor`), rounded up
    instead where rounding down would lose more than 10%: the TensorFlow MobileNet rule
    torchvision sizes channels with (a 72-channel block's squeeze: 72 // 4 = 18 -> 24)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def require_input(model: str, input_shape: Shape, minimum: int = MIN_SIZE) -> None:
    """A `model.shape` error unless both sides of the input are at least `minimum`."""
    height, width, channels = input_shape
    if min(height, width) >= minimum:
        return
    raise ContractError(
        model_shape(
            f"{model} needs an input of at least {minimum}x{minimum}, got {height}x{width}: its "
            f"stride-2 stages would shrink it below 1x1 and read padding, not the image",
            stage="model",
            expected=f"b h w {channels} with h, w >= {minimum}",
            got=f"b {height} {width} {channels}",
            hint=f'name = "small_cnn" under [model] (it takes any input of 2x2 or more), '
            f"or a [model] input of {minimum}x{minimum} or more for {model}",
        )
    )


def conv_bn(
    features: int, kernel: int, stride: int, activation: str, name: str, **norm
) -> LayerEntry:
    """A `conv_bn` entry: torchvision's `Conv2dNormActivation`."""
    return {
        "type": "conv_bn",
        "features": features,
        "kernel": kernel,
        "stride": stride,
        "activation": activation,
        "name": name,
        **norm,
    }


def _mobilenet_v3(
    model: str, setting: Sequence[tuple], last: int, input_shape: Shape, num_classes: int
) -> list[LayerEntry]:
    require_input(model, input_shape)
    entries = [conv_bn(setting[0][0], 3, 2, "hardswish", "features.0", **_NORM)]
    for index, (_, kernel, expand, features, se, activation, stride) in enumerate(setting, 1):
        entries.append(
            {
                "type": "inverted_residual",
                "features": features,
                "expand": expand,
                "kernel": kernel,
                "stride": stride,
                "activation": activation,
                "squeeze": make_divisible(expand // 4) if se else 0,
                "se_activation": "relu",
                "se_gate": "hardsigmoid",
                "name": f"features.{index}",
                **_NORM,
            }
        )
    head = 6 * setting[-1][3]
    return [
        *entries,
        conv_bn(head, 1, 1, "hardswish", f"features.{len(setting) + 1}", **_NORM),
        {"type": "gap", "name": "avgpool"},
        {"type": "dense", "features": last, "activation": "hardswish", "name": "classifier.0"},
        {"type": "dropout", "rate": 0.2, "name": "classifier.2"},
        {"type": "dense", "features": num_classes, "name": "classifier.3"},
    ]


def mobilenet_v3_large(input_shape: Shape, num_classes: int, layers=()) -> list[LayerEntry]:
    """MobileNetV3-Large: 15 inverted residuals, 5.5M parameters at 1000 classes, 0.22 GMACs
    at 224 px. Inputs of 32 px or more."""
    return _mobilenet_v3("mobilenet_v3_large", _LARGE, 1280, input_shape, num_classes)


def mobilenet_v3_small(input_shape: Shape, num_classes: int, layers=()) -> list[LayerEntry]:
    """MobileNetV3-Small: 11 inverted residuals, 2.5M parameters at 1000 classes, 0.06 GMACs
    at 224 px. Inputs of 32 px or more."""
    return _mobilenet_v3("mobilenet_v3_small", _SMALL, 1024, input_shape, num_classes)
