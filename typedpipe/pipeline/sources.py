"""Data sources: images exactly as stored, with the spec that describes them.

A source never converts what it reads: digits arrive as uint8 0..255, an npz
file's arrays as they are. Converting is the job of the declared stages, so that
the contract check sees what the model would really receive. (Two conversions
are declared in `[data]` and so are not silent: `layout = "nchw"` transposes to
channels-last, and imagefolder's `mode` / `size` decode settings.)

Every source offers two things:
- `survey(config)`: a host-side audit that never raises on bad data. It returns
  the data's spec and labels with a diagnostic for each fault it found.
- `load(config, survey)`: the arrays for training, after a clean survey.
"""

import dataclasses
import functools
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

from typedpipe.contracts import ContractError, Diagnostic, ImageSpec, LabelSpec
from typedpipe.contracts.specs import Layout
from typedpipe.pipeline.config import Config


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
        return class_ids(self.labels)

    def take(self, indices: np.ndarray) -> "Dataset":
        return Dataset(
            self.images[indices], self.labels[indices], self.label_spec, self.class_names
        )

    def survey(self) -> "Survey":
        """The audit of arrays already in memory: emptiness and NaN/inf pixels."""
        if not len(self):
            return Survey.failed(
                Diagnostic(
                    "data.empty",
                    "the source holds no images",
                    stage="data",
                    expected="at least one image",
                    got=f"images {self.images.shape}",
                    hint="point [data] path at a file or folder with images",
                )
            )
        return Survey(
            self.spec,
            self.labels,
            self.label_spec,
            tuple(nonfinite_images(self.images)),
            dataset=self,
        )


@dataclasses.dataclass(frozen=True)
class Survey:
    """What the host audit learned about a source, with no pixels sent to a device.

    `spec` is None when no image could be read. `dataset` keeps arrays that were
    already loaded to audit them, so that loading after a clean check is free.
    """

    spec: ImageSpec | None
    labels: np.ndarray
    label_spec: LabelSpec
    diagnostics: tuple[Diagnostic, ...] = ()
    class_names: tuple[str, ...] = ()
    files: tuple[Path, ...] = ()
    dataset: Dataset | None = None

    @classmethod
    def failed(cls, *diagnostics: Diagnostic) -> "Survey":
        return cls(None, np.zeros(0, np.int32), LabelSpec("int", 0), diagnostics)

    @property
    def class_ids(self) -> np.ndarray:
        return class_ids(self.labels)


@dataclasses.dataclass(frozen=True)
class Source:
    survey: Callable[[Config], Survey]
    load: Callable[[Config, Survey], Dataset]


SOURCES: dict[str, Source] = {}


def register(name: str, survey: Callable[[Config], Survey] | None = None):
    """Register a source by name.

    Without `survey`, decorates `load(config) -> Dataset`: the survey loads the
    arrays, audits them, and keeps them for training. With `survey` (for data that
    can be audited without loading all of it), decorates `load(config, survey)`.
    """

    def add(load: Callable[..., Dataset]) -> Callable[..., Dataset]:
        if name in SOURCES:
            raise ValueError(f"source {name!r} is already registered")
        if survey is None:
            SOURCES[name] = Source(_survey_loaded(load), _kept)
        else:
            SOURCES[name] = Source(survey, load)
        return load

    return add


def _kept(config: Config, found: Survey) -> Dataset:
    """The arrays a loading survey kept."""
    if found.dataset is None:
        raise ValueError(f"the {config.data.source!r} survey kept no arrays to train on")
    return found.dataset


def _survey_loaded(load: Callable[[Config], Dataset]) -> Callable[[Config], Survey]:
    def survey(config: Config) -> Survey:
        try:
            return load(config).survey()
        except ContractError as err:
            return Survey.failed(*err.diagnostics)

    return survey


def survey(config: Config) -> Survey:
    """Audit the configured source; faults come back as diagnostics, never raised."""
    return SOURCES[config.data.source].survey(config)


def load(config: Config, found: Survey | None = None) -> Dataset:
    """The configured source's arrays.

    Raises:
        ContractError: the survey found a data fault (`data.*`, `value.nonfinite`, ...).
    """
    found = found or survey(config)
    faults = [d for d in found.diagnostics if d.is_error]
    if faults:
        raise ContractError(faults)
    return SOURCES[config.data.source].load(config, found)


def data_path(config: Config) -> Path:
    """`[data] path`, which the config check requires for file-backed sources."""
    if config.data.path is None:
        raise ValueError(f"source {config.data.source!r} needs [data] path")
    return Path(config.data.path)


def class_ids(labels: np.ndarray) -> np.ndarray:
    return labels.argmax(-1) if labels.ndim == 2 else labels


def spec_of(images: np.ndarray) -> ImageSpec:
    """The spec of a stored image array; the value range is measured, not assumed.

    A 4-d array whose axis 1 looks like channels (1, 3 or 4) and whose last axis
    does not is reported channels-first, so the check can name the layout.
    """
    if images.ndim == 4 and images.shape[1] in (1, 3, 4) and images.shape[3] not in (1, 3, 4):
        channels, height, width = images.shape[1:]
        layout: Layout = "nchw"
    else:
        height, width, channels = images.shape[1:4] if images.ndim == 4 else (*images.shape[1:], 1)
        layout = "nhwc"
    if images.size == 0:
        value_range = None
    elif np.issubdtype(images.dtype, np.floating):
        finite = images[np.isfinite(images)]
        value_range = (float(finite.min()), float(finite.max())) if finite.size else None
    else:
        value_range = (float(images.min()), float(images.max()))
    return ImageSpec(height, width, channels, str(images.dtype), value_range, layout)


def nonfinite_images(
    images: np.ndarray | Sequence[np.ndarray], names: Sequence[str] | None = None
) -> list[Diagnostic]:
    """`value.nonfinite` naming every image with a NaN or inf pixel (by index, or by `names`).

    `images` is one `(n, h, w, c)` array, or separate images of any sizes.
    """
    if isinstance(images, np.ndarray):
        floating = np.issubdtype(images.dtype, np.floating)
        flat = images.reshape(len(images), -1)
        bad = np.flatnonzero(~np.isfinite(flat).all(axis=1)).tolist() if floating else []
    else:
        bad = [
            i
            for i, image in enumerate(images)
            if image.dtype.kind == "f" and not np.isfinite(image).all()
        ]
    if not bad:
        return []
    return [
        Diagnostic(
            "value.nonfinite",
            f"{len(bad)} image(s) hold NaN or inf pixels",
            stage="data",
            expected="finite pixels",
            got=f"NaN/inf in {len(bad)} of {len(images)} images",
            hint="drop or repair these images before training (they are listed)",
            items=tuple(names[i] if names else f"#{i}" for i in bad),
        )
    ]


@dataclasses.dataclass(frozen=True)
class Splits:
    train: Dataset
    val: Dataset
    test: Dataset


def split_indices(
    classes: np.ndarray, val_fraction: float, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stratified train/val/test indices: every class keeps its share in each part.

    Raises:
        ContractError: `data.too_few`, when a class is too small to be split.
    """
    indices = np.arange(len(classes))

    def cut(pool: np.ndarray, fraction: float) -> tuple[np.ndarray, np.ndarray]:
        if fraction == 0:
            return pool, pool[:0]
        try:
            return train_test_split(
                pool, test_size=fraction, random_state=seed, stratify=classes[pool]
            )
        except ValueError as err:
            values, counts = np.unique(classes, return_counts=True)
            raise ContractError(
                Diagnostic(
                    "data.too_few",
                    f"the data cannot be split by class: {err}",
                    stage="data",
                    expected="enough images per class for train, val and test",
                    got=f"{len(classes)} images; the smallest class ({values[counts.argmin()]}) "
                    f"has {counts.min()}",
                    hint="add images to the smallest classes, or lower val_fraction and "
                    "test_fraction under [data] (0 skips that split)",
                )
            ) from None

    rest, test = cut(indices, test_fraction)
    train, val = cut(rest, val_fraction / (1.0 - test_fraction))
    return train, val, test


def split(dataset: Dataset, val_fraction: float, test_fraction: float, seed: int) -> Splits:
    """Stratified train/val/test split (see `split_indices`).

    Example:
        >>> parts = split(load_digits_dataset(), 0.1, 0.2, seed=0)
        >>> len(parts.train) + len(parts.val) + len(parts.test)
        1797
    """
    train, val, test = split_indices(dataset.class_ids, val_fraction, test_fraction, seed)
    return Splits(dataset.take(train), dataset.take(val), dataset.take(test))


def labels_as(label_format: str, ids: np.ndarray, num_classes: int) -> np.ndarray:
    """Class ids in the configured label format (one-hot rows are float32)."""
    if label_format == "onehot":
        return np.eye(num_classes, dtype=np.float32)[ids]
    return ids.astype(np.int32)


@register("digits")
def load_digits_dataset(config: Config | None = None) -> Dataset:
    """scikit-learn's 1,797 8x8 handwritten digits, as uint8 0..255 (stored 0..16)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    label_format = config.data.labels if config else "int"
    return Dataset(
        images,
        labels_as(label_format, digits.target, 10),
        LabelSpec(label_format, 10),
        tuple(map(str, range(10))),
    )
