"""Sources whose records fit in memory: read once, audited, kept for training."""

import abc

import numpy as np

from typedpipe.contracts import ContractError, LabelSpec
from typedpipe.contracts.diagnostics import data_empty
from typedpipe.pipeline.sources.audit import nonfinite_images, spec_of
from typedpipe.pipeline.sources.base import ArrayRecords, Source, Survey


def survey_arrays(
    images: np.ndarray, labels: np.ndarray, label_spec: LabelSpec, class_names: tuple[str, ...]
) -> Survey:
    """The audit of arrays in memory (emptiness, NaN/inf pixels), keeping them as records.

    Example:
        >>> found = survey_arrays(np.zeros((2, 4, 4, 1)), np.array([0, 1]), LabelSpec("int", 2),
        ...                       ("a", "b"))
        >>> found.spec.shape
        (4, 4, 1)
    """
    if not len(images):
        return Survey.failed(
            data_empty(
                "the source holds no images",
                expected="at least one image",
                got=f"images {images.shape}",
                hint="point [data] path at a file or folder with images",
            )
        )
    return Survey(
        spec_of(images),
        labels,
        label_spec,
        tuple(nonfinite_images(images)),
        class_names=class_names,
        records=ArrayRecords(images, labels),
    )


class ArraySource(Source):
    """A source read whole into memory by `arrays()`; its survey audits and keeps them."""

    @abc.abstractmethod
    def arrays(self) -> tuple[np.ndarray, np.ndarray, LabelSpec, tuple[str, ...]]:
        """Images `(n, h, w, c)`, labels, their spec and the class names.

        Raises:
            ContractError: the data cannot be read or is malformed.
        """

    def survey(self) -> Survey:
        try:
            return survey_arrays(*self.arrays())
        except ContractError as err:
            return Survey.failed(*err.diagnostics)
