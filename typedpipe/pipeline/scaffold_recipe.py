"""The fine-tuning half of `typedpipe init --weights FILE`: a pretrained network, the recipe.

What `init` writes after `[data]` when it is given a weights file: the file's
own architecture at 224 px, ImageNet's normalization (what such files were
trained on), a first epoch for the new head alone, and the augmentation recipe's
defaults, each line with a comment that says why.
"""

from collections.abc import Callable

#: The side the images are decoded to: `random_resized_crop` draws 224 px crops from
#: it in training, and its eval crop (the central 0.875) is 224 px too.
DECODE_SIDE = 256
#: The side ImageNet models are built and pretrained at.
SIDE = 224


def fine_tune_lines(
    architecture: str,
    weights: str,
    num_classes: int,
    batch_size: int,
    string: Callable[[str], str],
) -> list[str]:
    """`[[preprocess]]`, `[model]` and `[train]` of a fine-tuning config, commented."""
    return [
        "[[preprocess]]",
        'op = "to_float"',
        "scale = 0.00392156862745098  # uint8 pixels onto [0, 1]",
        "",
        "[[preprocess]]  # a random part of each photo, resized: the recipe's main augmentation",
        'op = "random_resized_crop"',
        f"height = {SIDE}  # at evaluation: the central crop instead, so no other stage is needed",
        f"width = {SIDE}",
        "",
        "[[preprocess]]  # a mirror image of a photo shows the same class",
        'op = "random_flip"',
        "",
        "[[preprocess]]  # two random photometric or geometric ops per image (timm's rand-m9)",
        'op = "rand_augment"',
        "num_ops = 2",
        "magnitude = 9",
        "",
        "[[preprocess]]  # the statistics the pretrained network expects (kept at evaluation)",
        'op = "normalize"',
        'preset = "imagenet"',
        "",
        "[[preprocess]]  # a blanked rectangle in a quarter of the images: robust to occlusion",
        'op = "random_erasing"',
        "probability = 0.25",
        "",
        "[model]",
        f"name = {string(architecture)}  # the architecture the file's tensors belong to",
        f"weights = {string(weights)}  # relative to where typedpipe runs",
        f"input = [{SIDE}, {SIDE}, 3]  # the size it was pretrained at",
        "input_range = [-3.0, 3.0]  # ImageNet-normalized values",
        f"num_classes = {num_classes}  # a new head when the file's differs",
        "",
        "[train]",
        "epochs = 10",
        "freeze_epochs = 1  # the new head alone first, so its random start does not "
        "disturb the backbone",
        "backbone_lr_mult = 0.1  # then the pretrained backbone moves 10x slower than the head",
        f"batch_size = {batch_size}",
        'optimizer = "adamw"',
        "learning_rate = 1e-3",
        "warmup_epochs = 1  # the rate ramps up over the first epoch",
        "label_smoothing = 0.1  # soft targets: less overconfident on few photos",
        'precision = "float32"',
        "",
    ]
