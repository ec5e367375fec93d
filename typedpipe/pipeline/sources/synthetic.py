"""The `synthetic` source: random, learnable images matching the model's input contract.

Its spec follows from the config alone, so `check` never generates it; training
and `bench` do.
"""

import dataclasses
from typing import Annotated

import numpy as np
from beartype.vale import Is

from typedpipe.contracts import ImageSpec, LabelSpec
from typedpipe.pipeline.sources.base import ArrayRecords, Source, Survey, labels_as, names_of

# Enough for any benchmark, and small enough that the images (at the model's
# input size) are never what exhausts memory before the memory check runs.
MAX_SAMPLES = 1_000_000


@dataclasses.dataclass(frozen=True)
class SyntheticOptions:
    num_samples: Annotated[
        int, Is[lambda n: 0 < n <= MAX_SAMPLES], f"an int in [1, {MAX_SAMPLES:,}]"
    ] = 1024


class Synthetic(Source):
    """`num_samples` float32 images matching `[model] input` and `input_range`, learnable.

    Each class has its own random pattern; an image is its class pattern plus as
    much uniform noise, scaled into `[model] input_range`.
    """

    Options = SyntheticOptions

    def _class_ids(self) -> np.ndarray:
        rng = np.random.default_rng(self.context.seed)
        count, classes = self.options.num_samples, self.context.num_classes
        return rng.permutation(np.arange(count) % classes)

    def survey(self) -> Survey:
        """The synthetic data's spec, known from the config: nothing is generated."""
        context = self.context
        return Survey(
            ImageSpec(*context.model_input, "float32", context.input_range),
            labels_as(context.labels, self._class_ids(), context.num_classes),
            LabelSpec(context.labels, context.num_classes),
            class_names=tuple(names_of(context.num_classes)),
        )

    def records(self, survey: Survey) -> ArrayRecords:
        context = self.context
        rng = np.random.default_rng(context.seed + 1)
        shape = context.model_input
        patterns = rng.uniform(size=(context.num_classes, *shape)).astype(np.float32)
        noise = rng.uniform(size=(self.options.num_samples, *shape)).astype(np.float32)
        lo, hi = context.input_range
        images = lo + (hi - lo) * (0.5 * patterns[survey.class_ids] + 0.5 * noise)
        return ArrayRecords(images.astype(np.float32), survey.labels)
