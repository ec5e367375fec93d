"""Residual networks (He et al., 2016): ResNet-20 for CIFAR and ResNet-18."""

from collections.abc import Sequence

from typedpipe.models.layers import Shape
from typedpipe.models.zoo.entries import LayerEntry, conv


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


def resnet20(input_shape: Shape, num_classes: int, layers=()) -> list[LayerEntry]:
    """ResNet-20 for CIFAR (He et al., 2016): 3 stages of 3 basic blocks, 16/32/64 wide."""
    stem = [conv(16, activation="none"), {"type": "batchnorm", "activation": "relu"}]
    return _resnet(stem, (16, 32, 64), 3, num_classes)


def resnet18(input_shape: Shape, num_classes: int, layers=()) -> list[LayerEntry]:
    """ResNet-18: 4 stages of 2 basic blocks, 64..512 wide.

    Inputs of 64 px or more get the ImageNet stem (7x7 stride-2 conv, 3x3 max
    pool); smaller ones the CIFAR stem (one 3x3 conv), which would otherwise
    shrink an 8x8 or 32x32 image to nothing.
    """
    if min(input_shape[:2]) >= 64:
        stem = [
            conv(64, 7, 2, activation="none"),
            {"type": "batchnorm", "activation": "relu"},
            {"type": "maxpool", "window": 3, "stride": 2, "padding": "same"},
        ]
    else:
        stem = [conv(64, activation="none"), {"type": "batchnorm", "activation": "relu"}]
    return _resnet(stem, (64, 128, 256, 512), 2, num_classes)
