"""EfficientNet-B0 (Tan and Le, 2019), as torchvision builds it.

Layer names are torchvision's module names (`features.0`, `features.1.0` for
stage 1's first block, ... `classifier.1`). Built for 224 px; any input of
`mobilenet.MIN_SIZE` (32) px or more is accepted: the same five stride-2 stages.
"""

from typedpipe.models.layers import Shape
from typedpipe.models.zoo.entries import LayerEntry
from typedpipe.models.zoo.mobilenet import conv_bn, make_divisible, require_input

# (expansion ratio, kernel, stride, input channels, output channels, blocks) per stage.
_B0 = (
    (1, 3, 1, 32, 16, 1),
    (6, 3, 2, 16, 24, 2),
    (6, 5, 2, 24, 40, 2),
    (6, 3, 2, 40, 80, 3),
    (6, 5, 1, 80, 112, 3),
    (6, 5, 2, 112, 192, 4),
    (6, 3, 1, 192, 320, 1),
)
# torchvision's EfficientNet-B0: nn.BatchNorm2d's defaults (eps 1e-5, torch momentum 0.1).
_NORM = {"epsilon": 1e-5, "momentum": 0.9}
# Stochastic depth rises linearly from 0 at the first block to this (excluded) at the last.
_DROP_PATH = 0.2


def efficientnet_b0(input_shape: Shape, num_classes: int, layers=()) -> list[LayerEntry]:
    """EfficientNet-B0: 16 MBConv blocks in 7 stages, 5.3M parameters at 1000 classes,
    0.39 GMACs at 224 px. Inputs of 32 px or more."""
    require_input("efficientnet_b0", input_shape)
    entries = [conv_bn(_B0[0][3], 3, 2, "silu", "features.0", **_NORM)]
    total, block = sum(stage[-1] for stage in _B0), 0
    for index, (ratio, kernel, stride, first_in, features, blocks) in enumerate(_B0, 1):
        for position in range(blocks):
            in_features = first_in if position == 0 else features
            entries.append(
                {
                    "type": "inverted_residual",
                    "features": features,
                    "expand": make_divisible(in_features * ratio),
                    "kernel": kernel,
                    "stride": stride if position == 0 else 1,
                    "activation": "silu",
                    "squeeze": max(1, in_features // 4),
                    "se_activation": "silu",
                    "se_gate": "sigmoid",
                    "drop_path": _DROP_PATH * block / total,
                    "name": f"features.{index}.{position}",
                    **_NORM,
                }
            )
            block += 1
    return [
        *entries,
        conv_bn(4 * _B0[-1][4], 1, 1, "silu", f"features.{len(_B0) + 1}", **_NORM),
        {"type": "gap", "name": "avgpool"},
        {"type": "dropout", "rate": 0.2, "name": "classifier.0"},
        {"type": "dense", "features": num_classes, "name": "classifier.1"},
    ]
