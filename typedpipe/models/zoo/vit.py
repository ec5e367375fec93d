"""Vision Transformers (Dosovitskiy et al., 2021): torchvision's ViT-B/16 and timm's
ViT-S/16, each with its layers named as its reference names its modules (so that
its weights map by name).

The position embedding has one row per patch of the configured input: weights
saved at another image size do not fit (resizing them is not supported).
"""

from typing import Literal

from typedpipe.contracts import ContractError
from typedpipe.contracts.diagnostics import model_shape
from typedpipe.models.layers import Shape
from typedpipe.models.layers.transformer import nearest_multiple
from typedpipe.models.zoo.entries import LayerEntry

_PATCH = 16


def _check_patches(name: str, input_shape: Shape) -> None:
    height, width, channels = input_shape
    if height % _PATCH or width % _PATCH:
        fits = [nearest_multiple(size, _PATCH) for size in (height, width)]
        raise ContractError(
            model_shape(
                f"{name} cuts the image into {_PATCH}x{_PATCH} patches, which do not tile "
                f"{height}x{width}",
                stage="model",
                expected=f"height and width multiples of {_PATCH}",
                got=f"input = [{height}, {width}, {channels}]",
                hint=f"input = [{fits[0]}, {fits[1]}, {channels}] under [model] (a resize "
                "stage to that size)",
            )
        )


def _vit(
    naming: Literal["torchvision", "timm"],
    names: dict[str, str],
    width: int,
    depth: int,
    heads: int,
    num_classes: int,
) -> list[LayerEntry]:
    blocks = [
        {
            "type": "encoder_block",
            "heads": heads,
            "mlp_features": 4 * width,
            "naming": naming,
            "name": names["block"].format(index),
        }
        for index in range(depth)
    ]
    return [
        {"type": "patch_embed", "features": width, "patch": _PATCH, "name": names["patches"]},
        {"type": "class_token", "name": names["class_token"]},
        {"type": "position_embedding", "name": names["positions"]},
        *blocks,
        {"type": "layernorm", "name": names["norm"]},
        {"type": "token_pool", "pool": "class", "name": "pool"},
        {"type": "dense", "features": num_classes, "name": names["head"]},
    ]


_TORCHVISION = {
    "patches": "conv_proj",
    "class_token": "class_token",
    "positions": "encoder.pos_embedding",
    "block": "encoder.layers.encoder_layer_{}",
    "norm": "encoder.ln",
    "head": "heads.head",
}
_TIMM = {
    "patches": "patch_embed.proj",
    "class_token": "cls_token",
    "positions": "pos_embed",
    "block": "blocks.{}",
    "norm": "norm",
    "head": "head",
}


def vit_b_16(input_shape: Shape, num_classes: int, layers=()) -> list[LayerEntry]:
    """torchvision's ViT-B/16: 12 blocks of 768 features, 12 heads; 86.6M parameters
    and 17.6 GMACs at 224 px (1000 classes). Height and width multiples of 16."""
    _check_patches("vit_b_16", input_shape)
    return _vit("torchvision", _TORCHVISION, 768, 12, 12, num_classes)


def vit_s_16(input_shape: Shape, num_classes: int, layers=()) -> list[LayerEntry]:
    """timm's ViT-S/16 (`vit_small_patch16_224`): 12 blocks of 384 features, 6 heads;
    22.1M parameters and 4.6 GMACs at 224 px (1000 classes). Height and width multiples
    of 16."""
    _check_patches("vit_s_16", input_shape)
    return _vit("timm", _TIMM, 384, 12, 6, num_classes)
