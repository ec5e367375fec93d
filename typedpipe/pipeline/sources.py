"""Data sources: images exactly as stored, with the spec that describes them.

A source never converts what it reads: digits arrive as uint8 0..255, an npz
file's arrays as they are. Converting is the job of the declared stages, so that
the contract check sees what the model would really receive.
"""

import dataclasses
import functools
from collections.abc import Callable

import numpy as np
from sklearn.model_selection import train_test_split

from typedpipe.contracts import ImageSpec, LabelSpec
from typedpipe.pipeline.config import Config

SOURCES: dict[str, Callable[[Config], "Dataset"]] = {}


def register(name: str):
    def add(load: Callable[[Config], "Dataset"]):
        if name in SOURCES:
            raise ValueError(f"source {name!r} is already registered")
        SOURCES[name] = load
        return load

    return add


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Images `(n, h, w, c)` as stored, labels `(n,)` ints or `(n, k)` one-hot rows."""

    images: np.ndarray
    labels: np.ndarray
    label_spec: LabelSpec
    class_names: tuple[str, ...]

    @functools.cached_property
    def spec(self) -> ImageSpec:
        """Measured on first use only: the splits made by `take` rarely need theirs."""
        return spec_of(self.images)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def class_ids(self) -> np.ndarray:
        """Integer class ids, whatever the stored label format."""
        return self.labels.argmax(-1) if self.labels.ndim == 2 else self.labels

    def take(self, indices: np.ndarray) -> "Dataset":
        return Dataset(self.images[indices], self.labels[indices], self.label_spec,
                       self.class_names)


def spec_of(images: np.ndarray) -> ImageSpec:
    """The spec of a stored image array; the value range is measured, not assumed."""
    height, width, channels = images.shape[1:4] if images.ndim == 4 else (*images.shape[1:], 1)
    if images.size == 0:
        value_range = None
    elif np.issubdtype(images.dtype, np.floating):
        finite = images[np.isfinite(images)]
        value_range = (float(finite.min()), float(finite.max())) if finite.size else None
    else:
        value_range = (float(images.min()), float(images.max()))
    return ImageSpec(height, width, channels, str(images.dtype), value_range)


@dataclasses.dataclass(frozen=True)
class Splits:
    train: Dataset
    val: Dataset
    test: Dataset


def split(dataset: Dataset, val_fraction: float, test_fraction: float, seed: int) -> Splits:
    """Stratified train/val/test split: every class keeps its share in each part.

    Example:
        >>> parts = split(load_digits_dataset(), 0.1, 0.2, seed=0)
        >>> len(parts.train) + len(parts.val) + len(parts.test)
        1797
    """
    indices = np.arange(len(dataset))
    classes = dataset.class_ids

    def cut(pool: np.ndarray, fraction: float) -> tuple[np.ndarray, np.ndarray]:
        if fraction == 0:
            return pool, pool[:0]
        return train_test_split(pool, test_size=fraction, random_state=seed,
                                stratify=classes[pool])

    rest, test = cut(indices, test_fraction)
    train, val = cut(rest, val_fraction / (1.0 - test_fraction))
    return Splits(dataset.take(train), dataset.take(val), dataset.take(test))


def load(config: Config) -> Dataset:
    """Read the configured source."""
    return SOURCES[config.data.source](config)


@register("digits")
def load_digits_dataset(config: Config | None = None) -> Dataset:
    """scikit-learn's 1,797 8x8 handwritten digits, as uint8 0..255 (stored 0..16)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    labels = digits.target.astype(np.int32)
    return _with_label_format(images, labels, 10, config, tuple(map(str, range(10))))


def _with_label_format(images, labels, num_classes, config, class_names) -> Dataset:
    label_format = config.data.labels if config else "int"
    if label_format == "onehot" and labels.ndim == 1:
        labels = np.eye(num_classes, dtype=np.float32)[labels]
    return Dataset(images, labels, LabelSpec(label_format, num_classes), class_names)
