"""Data sources: the `Source` protocol, the built-in sources, and the Grain loader."""

from typedpipe.pipeline.sources.arrays import ArraySource as ArraySource
from typedpipe.pipeline.sources.arrays import survey_arrays as survey_arrays
from typedpipe.pipeline.sources.base import ArrayRecords as ArrayRecords
from typedpipe.pipeline.sources.base import RecordSource as RecordSource
from typedpipe.pipeline.sources.base import Source as Source
from typedpipe.pipeline.sources.base import SourceContext as SourceContext
from typedpipe.pipeline.sources.base import Survey as Survey
from typedpipe.pipeline.sources.base import read_batch as read_batch
from typedpipe.pipeline.sources.digits import Digits
from typedpipe.pipeline.sources.imagefolder import ImageFolder
from typedpipe.pipeline.sources.loader import Batch as Batch
from typedpipe.pipeline.sources.loader import batches as batches
from typedpipe.pipeline.sources.loader import training_batches as training_batches
from typedpipe.pipeline.sources.npz import Npz
from typedpipe.pipeline.sources.split import Splits as Splits
from typedpipe.pipeline.sources.split import config_split as config_split
from typedpipe.pipeline.sources.split import split_indices as split_indices
from typedpipe.pipeline.sources.synthetic import Synthetic
from typedpipe.registry import Registry

#: Every source a config can name: `[data] source = "..."`.
SOURCES: Registry[type[Source]] = Registry(
    "data source", key="source", table="[data]", code="config.unknown_name"
)


def register_source(name: str):
    """Make a `Source` subclass usable from a config as `[data] source = "<name>"`.

    Its `Options` dataclass declares its own `[data]` keys, which the config
    loader then validates like every other key.

    Example:
        >>> import numpy as np
        >>> from typedpipe.contracts import LabelSpec
        >>> @register_source("ramp")
        ... class Ramp(ArraySource):
        ...     # Four 2x2 gray images, each brighter than the last: two dark, two bright.
        ...     def arrays(self):
        ...         images = np.repeat(np.arange(4, dtype=np.uint8), 4).reshape(4, 2, 2, 1)
        ...         labels = np.array([0, 0, 1, 1], np.int32)
        ...         return images, labels, LabelSpec("int", 2), ("dark", "bright")
        >>> survey = SOURCES.get("ramp")().survey()
        >>> survey.spec.describe(), survey.class_names, survey.errors
        ('uint8 b 2 2 1 in [0, 3]', ('dark', 'bright'), [])
    """

    def add(cls: type[Source]) -> type[Source]:
        if not (isinstance(cls, type) and issubclass(cls, Source)):
            raise TypeError(f"register_source({name!r}) takes a Source subclass, got {cls!r}")
        SOURCES.register(name, cls)
        return cls

    return add


for _name, _source in (
    ("digits", Digits),
    ("npz", Npz),
    ("imagefolder", ImageFolder),
    ("synthetic", Synthetic),
):
    SOURCES.register(_name, _source)
