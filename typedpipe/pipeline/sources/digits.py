"""The `digits` source: scikit-learn's 1,797 8x8 handwritten digits, the built-in default."""

import numpy as np

from typedpipe.contracts import LabelSpec
from typedpipe.pipeline.sources.arrays import ArraySource
from typedpipe.pipeline.sources.base import labels_as, names_of


class Digits(ArraySource):
    """8x8x1 uint8 images in 0..255 (stored 0..16 by scikit-learn, scaled exactly), 10 classes."""

    def arrays(self) -> tuple[np.ndarray, np.ndarray, LabelSpec, tuple[str, ...]]:
        from sklearn.datasets import load_digits

        digits = load_digits()
        images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
        label_format = self.context.labels
        labels = labels_as(label_format, digits.target, 10)
        return images, labels, LabelSpec(label_format, 10), tuple(names_of(10))
