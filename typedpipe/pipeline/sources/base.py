"""The source protocol: a survey that never raises, then random-access records.

A source is what `[data] source = "..."` names. It declares its own `[data]`
keys as a frozen dataclass (`Options`), which the config loader validates
strictly, and offers two things:

- `survey()`: a host-side audit that never raises on bad data. It returns the
  data's spec, every label, and a diagnostic for each fault found.
- `records(survey)`: after a clean survey, a random-access record source
  (Grain's protocol: `__len__` and `__getitem__ -> (image, label)`), which the
  Grain loader shuffles, shards, batches and prefetches.

A source never converts what it reads: images arrive as stored. Converting is
the job of the declared stages, so the check sees what the model would get.
"""

import abc
import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, ClassVar, Protocol, runtime_checkable

import numpy as np
from beartype.vale import Is

from typedpipe.contracts import ContractError, Diagnostic, ImageSpec, LabelSpec
from typedpipe.contracts.specs import LabelFormat
from typedpipe.pipeline.sources.audit import class_ids

#: A `[data] path`: an empty one would silently mean the current directory.
DataPath = Annotated[
    str,
    Is[lambda s: bool(s.strip()) and "\0" not in s],
    "a path to the data (not empty, no NUL)",
]


@runtime_checkable
class RecordSource(Protocol):
    """Random access to `(image, label)` records, as Grain's data sources offer it."""

    def __len__(self) -> int: ...
    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]: ...


@dataclasses.dataclass(frozen=True)
class ArrayRecords:
    """Records held in memory: images `(n, h, w, c)` as stored, labels `(n,)` or `(n, k)`.

    Example:
        >>> records = ArrayRecords(np.zeros((4, 8, 8, 1), np.uint8), np.arange(4))
        >>> records.read_batch(np.array([3, 1]))[1]
        array([3, 1])
    """

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        return self.images[index], self.labels[index]

    def read_batch(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Many records in one gather: what the loader uses when a source offers it."""
        return self.images[indices], self.labels[indices]


def read_batch(records: RecordSource, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The records at `indices`, stacked: in one call where the source can, else one by one."""
    reader = getattr(records, "read_batch", None)
    if reader is not None:
        return reader(indices)
    pairs = [records[int(i)] for i in indices]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


@dataclasses.dataclass(frozen=True)
class SourceContext:
    """What a source may know of the rest of the pipeline."""

    seed: int = 0
    labels: LabelFormat = "int"  # how the labels are stored
    model_input: tuple[int, int, int] = (8, 8, 1)
    input_range: tuple[float, float] = (0.0, 1.0)
    num_classes: int = 10


@dataclasses.dataclass(frozen=True)
class Survey:
    """What the host audit learned about a source, with no pixels sent to a device.

    `spec` is None when no image could be read. `labels` holds every record's
    label, in record order. `records` keeps records that were already loaded to
    audit them, so that reading them after a clean check costs nothing. `files`
    (under `root`) are the records' files, for sources that read files.
    """

    spec: ImageSpec | None
    labels: np.ndarray
    label_spec: LabelSpec
    diagnostics: tuple[Diagnostic, ...] = ()
    class_names: tuple[str, ...] = ()
    files: tuple[Path, ...] = ()
    records: RecordSource | None = None
    root: Path | None = None

    @classmethod
    def failed(cls, *diagnostics: Diagnostic) -> "Survey":
        return cls(None, np.zeros(0, np.int32), LabelSpec("int", 0), diagnostics)

    @property
    def class_ids(self) -> np.ndarray:
        return class_ids(self.labels)

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.is_error]

    def item_names(self, indices: Sequence[int]) -> list[str]:
        """How a diagnostic names records: their files, relative to `root`, or `#index`.

        Example:
            >>> Survey.failed().item_names([7, 31])
            ['#7', '#31']
        """
        if not self.files:
            return [f"#{i}" for i in indices]
        paths = [self.files[i] for i in indices]
        if self.root is None:
            return [str(p) for p in paths]
        return [
            str(p.relative_to(self.root)) if p.is_relative_to(self.root) else str(p) for p in paths
        ]


@dataclasses.dataclass(frozen=True)
class NoOptions:
    """A source without `[data]` keys of its own."""


class Source(abc.ABC):
    """A source of stored images, named by `[data] source`.

    Subclasses set `Options` to a frozen dataclass of their own `[data]` keys
    (with defaults; annotations are the schema) and implement `survey`.
    Register one with `register_source("name")` to use it from a config.
    """

    Options: ClassVar[type] = NoOptions

    def __init__(self, options: Any = None, context: SourceContext | None = None):
        self.options = options if options is not None else self.Options()
        self.context = context or SourceContext()

    @abc.abstractmethod
    def survey(self) -> Survey:
        """Audit the data; faults come back as diagnostics, never raised."""

    def records(self, survey: Survey) -> RecordSource:
        """Every record, in the survey's order. The default serves what the survey kept.

        Raises:
            ContractError: the survey found a fault.
        """
        if survey.errors:
            raise ContractError(survey.errors)
        if survey.records is None:
            raise NotImplementedError(f"{type(self).__name__} keeps no records: define records()")
        return survey.records


def labels_as(label_format: str, ids: np.ndarray, num_classes: int) -> np.ndarray:
    """Class ids in the configured label format (one-hot rows are float32)."""
    if label_format == "onehot":
        return np.eye(num_classes, dtype=np.float32)[ids]
    return ids.astype(np.int32)


def names_of(count: int) -> Sequence[str]:
    """Class names for data that has none: the class ids as text."""
    return tuple(map(str, range(count)))
