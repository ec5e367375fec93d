"""ConvNeXt (Liu et al., 2022), exactly as torchvision builds it, its layers named as
torchvision names its modules (so that its weights map by name)."""

from typedpipe.contracts import ContractError
from typedpipe.contracts.diagnostics import model_shape
from typedpipe.models.layers import Shape
from typedpipe.models.zoo.entries import LayerEntry, conv

# torchvision's convnext_tiny: (channels, blocks) per stage, and its stochastic depth.
_TINY = ((96, 3), (192, 3), (384, 9), (768, 3))
_TINY_DROP_PATH = 0.1
# The stem divides the image by 4, each of the three downsampling layers by 2.
_SMALLEST = 4 * 2 * 2 * 2


def _convnext(
    input_shape: Shape, num_classes: int, stages: tuple[tuple[int, int], ...], drop_path: float
) -> list[LayerEntry]:
    height, width, channels = input_shape
    if min(height, width) < _SMALLEST:
        raise ContractError(
            model_shape(
                f"ConvNeXt divides the image by {_SMALLEST}: {height}x{width} would vanish",
                stage="model",
                expected=f"an input of at least {_SMALLEST}x{_SMALLEST}",
                got=f"input = [{height}, {width}, {channels}]",
                hint=f"input = [{max(height, _SMALLEST)}, {max(width, _SMALLEST)}, {channels}] "
                "under [model] (a resize stage to that size)",
            )
        )
    first = stages[0][0]
    entries = [
        conv(first, 4, 4, "valid", "none", name="features.0.0"),
        {"type": "layernorm", "name": "features.0.1"},
    ]
    total = sum(blocks for _, blocks in stages)
    done = 0
    for stage, (_, blocks) in enumerate(stages):
        index = 2 * stage + 1  # features.1, 3, 5, 7; downsampling at 2, 4, 6
        for block in range(blocks):
            entries.append(
                {
                    "type": "convnext_block",
                    "drop_path": drop_path * done / (total - 1),  # deeper blocks drop more
                    "name": f"features.{index}.{block}",
                }
            )
            done += 1
        if stage + 1 < len(stages):
            entries += [
                {"type": "layernorm", "name": f"features.{index + 1}.0"},
                conv(stages[stage + 1][0], 2, 2, "valid", "none", name=f"features.{index + 1}.1"),
            ]
    return [
        *entries,
        {"type": "gap", "name": "avgpool"},
        {"type": "layernorm", "name": "classifier.0"},
        {"type": "dense", "features": num_classes, "name": "classifier.2"},
    ]


def convnext_tiny(input_shape: Shape, num_classes: int, layers=()) -> list[LayerEntry]:
    """ConvNeXt-T: stages of 3, 3, 9, 3 blocks, 96..768 wide; 28.6M parameters and
    4.5 GMACs at 224 px (1000 classes). Takes any input of 32x32 or more."""
    return _convnext(input_shape, num_classes, _TINY, _TINY_DROP_PATH)
