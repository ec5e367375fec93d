"""Preprocessing stages: the `Stage` contract, the built-in ops, and their registry."""

from typedpipe.pipeline.stages.augment import RandomCrop, RandomFlip
from typedpipe.pipeline.stages.base import STAGES as STAGES
from typedpipe.pipeline.stages.base import Preprocess as Preprocess
from typedpipe.pipeline.stages.base import Stage as Stage
from typedpipe.pipeline.stages.base import make_stage as make_stage
from typedpipe.pipeline.stages.base import register_stage as register_stage
from typedpipe.pipeline.stages.color import ColorJitter
from typedpipe.pipeline.stages.crop import RandomResizedCrop
from typedpipe.pipeline.stages.erasing import RandomErasing
from typedpipe.pipeline.stages.image import (
    CenterCrop,
    Normalize,
    Resize,
    ToFloat,
    ToGray,
    ToRGB,
)
from typedpipe.pipeline.stages.randaugment import RandAugment

for _builtin in (ToFloat, Normalize, Resize, CenterCrop, RandomCrop, RandomFlip, ToRGB, ToGray):
    register_stage(_builtin)
for _recipe in (RandomResizedCrop, ColorJitter, RandAugment, RandomErasing):
    register_stage(_recipe)
