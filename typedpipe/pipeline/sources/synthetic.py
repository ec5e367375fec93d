"""The `synthetic` source: random, learnable images matching the model's input contract.

Its spec follows from the config alone, so `check` never generates it; training
and `bench` do. What generating would hold in memory is known from the config
too, and held against the host's memory before anything is generated.
"""

import dataclasses
import math
from typing import Annotated

import numpy as np
from beartype.vale import Is

from typedpipe.contracts import ImageSpec, LabelSpec
from typedpipe.memory import budget, over_budget
from typedpipe.pipeline.sources.base import ArrayRecords, Source, Survey, labels_as, names_of

# Images generated at once: the temporaries of one block stay a few megabytes.
_BLOCK_BYTES = 16 * 2**20

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

    def bytes_needed(self) -> int:
        """Host memory the generated records hold: the images, the class patterns, the labels."""
        context = self.context
        image = math.prod(context.model_input) * 4
        label = 4 * (context.num_classes if context.labels == "onehot" else 1)
        return (self.options.num_samples + context.num_classes) * image + (
            self.options.num_samples * label
        )

    def survey(self) -> Survey:
        """The synthetic data's spec, known from the config: nothing is generated."""
        context = self.context
        need = self.bytes_needed()
        if need > budget():
            image = math.prod(context.model_input) * 4
            fits = max(1, (budget() - context.num_classes * image) // (image + 4))
            # A power of two: the memory free now is not the memory free a moment later.
            fits = 2 ** int(math.log2(fits))
            return Survey.failed(
                over_budget(
                    f"{self.options.num_samples:,} synthetic "
                    f"{'x'.join(map(str, context.model_input))} float32 images",
                    need,
                    f"num_samples = {min(fits, self.options.num_samples)} under [data] "
                    "(or a smaller [model] input)",
                    stage="[data]",
                )
            )
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
        lo, hi = context.input_range
        count, ids = self.options.num_samples, survey.class_ids
        images = np.empty((count, *shape), np.float32)
        # Block by block: the noise is drawn in the same order as in one call.
        rows = max(1, _BLOCK_BYTES // (8 * max(1, math.prod(shape))))
        for start in range(0, count, rows):
            stop = min(start + rows, count)
            noise = rng.uniform(size=(stop - start, *shape)).astype(np.float32)
            block = lo + (hi - lo) * (0.5 * patterns[ids[start:stop]] + 0.5 * noise)
            images[start:stop] = block
        return ArrayRecords(images, survey.labels)
