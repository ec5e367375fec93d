"""Residual networks (He et al., 2016): ResNet-20 for CIFAR, and torchvision's
ResNet-18, -34 and -50.

At 64 px and more, `resnet18`, `resnet34` and `resnet50` are torchvision's
networks exactly (v1.5: a bottleneck's stride on its 3x3 conv), every layer named
as torchvision names its module (`conv1`, `bn1`, `layer1.0`, ..., `fc`), so that
a file of torchvision weights loads by name. Below 64 px the 7x7 stride-2 stem
and its max pool would shrink the image 4x before the first block (8x8 to 2x2):
the small-input stem is one 3x3 conv at stride 1 instead. For `resnet34` and
`resnet50` that stem is `conv1` (3x3, pad 1, no bias) and `bn1`, the stages as
above; `resnet18` below 64 px stays the network it has always been (a biased
3x3 stem and `residual` blocks named `stageN.blockM`), so that runs trained with
it still load.
"""

from collections.abc import Sequence

from typedpipe.models.layers import Shape
from typedpipe.models.zoo.entries import LayerEntry, conv

#: The smallest side that gets torchvision's ImageNet stem.
IMAGENET_STEM_FROM = 64

# torchvision's stage widths (`planes`) and blocks per stage.
_WIDTHS = (64, 128, 256, 512)
_DEPTHS = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3), "resnet50": (3, 4, 6, 3)}


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


def _torchvision_stem(input_shape: Shape) -> list[LayerEntry]:
    """torchvision's stem from 64 px; below, the small-input stem (no downsampling)."""
    if min(input_shape[:2]) >= IMAGENET_STEM_FROM:
        return [
            conv(64, 7, 2, padding=3, activation="none", use_bias=False, name="conv1"),
            {"type": "batchnorm", "activation": "relu", "name": "bn1"},
            {"type": "maxpool", "window": 3, "stride": 2, "padding": 1, "name": "maxpool"},
        ]
    return [
        conv(64, 3, 1, padding=1, activation="none", use_bias=False, name="conv1"),
        {"type": "batchnorm", "activation": "relu", "name": "bn1"},
    ]


def _torchvision_resnet(
    input_shape: Shape, num_classes: int, depths: Sequence[int], block: str, expansion: int
) -> list[LayerEntry]:
    """torchvision's `ResNet`: the stem, four stages of `block`, the pooled linear head."""
    entries = _torchvision_stem(input_shape)
    for stage, (width, depth) in enumerate(zip(_WIDTHS, depths, strict=True), start=1):
        for index in range(depth):
            entries.append(
                {
                    "type": block,
                    "features": width * expansion,
                    "stride": 2 if stage > 1 and index == 0 else 1,
                    "name": f"layer{stage}.{index}",
                }
            )
    return [
        *entries,
        {"type": "gap", "name": "avgpool"},
        {"type": "dense", "features": num_classes, "name": "fc"},
    ]


def resnet20(input_shape: Shape, num_classes: int, layers=()) -> list[LayerEntry]:
    """ResNet-20 for CIFAR (He et al., 2016): 3 stages of 3 basic blocks, 16/32/64 wide."""
    stem = [conv(16, activation="none"), {"type": "batchnorm", "activation": "relu"}]
    return _resnet(stem, (16, 32, 64), 3, num_classes)


def resnet18(input_shape: Shape, num_classes: int, layers=()) -> list[LayerEntry]:
    """ResNet-18: 4 stages of 2 basic blocks, 64..512 wide; torchvision's from 64 px.

    Below 64 px: one biased 3x3 conv as the stem and `residual` blocks, as before
    torchvision's network was added (see the module's docstring).
    """
    if min(input_shape[:2]) >= IMAGENET_STEM_FROM:
        return _torchvision_resnet(input_shape, num_classes, _DEPTHS["resnet18"], "basic_block", 1)
    stem = [conv(64, activation="none"), {"type": "batchnorm", "activation": "relu"}]
    return _resnet(stem, _WIDTHS, 2, num_classes)


def resnet34(input_shape: Shape, num_classes: int, layers=()) -> list[LayerEntry]:
    """torchvision's ResNet-34: 3, 4, 6, 3 basic blocks, 64..512 wide."""
    return _torchvision_resnet(input_shape, num_classes, _DEPTHS["resnet34"], "basic_block", 1)


def resnet50(input_shape: Shape, num_classes: int, layers=()) -> list[LayerEntry]:
    """torchvision's ResNet-50: 3, 4, 6, 3 bottlenecks, 256..2048 wide (64..512 inside)."""
    return _torchvision_resnet(input_shape, num_classes, _DEPTHS["resnet50"], "bottleneck", 4)
