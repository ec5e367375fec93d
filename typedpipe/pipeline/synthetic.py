"""The `synthetic` source: random, learnable images matching the model's input contract.

Its spec follows from the config alone, so `check` never generates it; training
and `bench` do.
"""

import numpy as np

from typedpipe.contracts import ImageSpec, LabelSpec
from typedpipe.pipeline.config import Config
from typedpipe.pipeline.sources import Dataset, Survey, labels_as, register


def _synthetic_ids(config: Config) -> np.ndarray:
    rng = np.random.default_rng(config.seed)
    return rng.permutation(np.arange(config.data.num_samples) % config.model.num_classes)


def _survey_synthetic(config: Config) -> Survey:
    """The synthetic data's spec, known from the config: nothing is generated."""
    num_classes = config.model.num_classes
    label_format = config.data.labels
    spec = ImageSpec(*config.model.input, "float32", config.model.input_range)
    return Survey(
        spec,
        labels_as(label_format, _synthetic_ids(config), num_classes),
        LabelSpec(label_format, num_classes),
    )


@register("synthetic", survey=_survey_synthetic)
def load_synthetic(config: Config, found: Survey) -> Dataset:
    """`num_samples` float32 images matching the model's input contract, learnable.

    Each class has its own random pattern; an image is its class pattern plus as
    much uniform noise, scaled into `[model] input_range`.
    """
    rng = np.random.default_rng(config.seed + 1)
    shape = config.model.input
    patterns = rng.uniform(size=(config.model.num_classes, *shape)).astype(np.float32)
    noise = rng.uniform(size=(config.data.num_samples, *shape)).astype(np.float32)
    lo, hi = config.model.input_range
    images = lo + (hi - lo) * (0.5 * patterns[found.class_ids] + 0.5 * noise)
    names = tuple(map(str, range(config.model.num_classes)))
    return Dataset(images.astype(np.float32), found.labels, found.label_spec, names)
