"""The config schema: one frozen dataclass per table; annotations are what the loader checks.

A registered name (source, model, optimizer) is annotated with its registry, so
an unknown one gets "did you mean" and the list of valid names. A source's own
`[data]` keys live in its `Options` dataclass, kept in `DataConfig.options`.
"""

import dataclasses
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from beartype.vale import Is

from typedpipe.contracts.specs import MAX_CLASSES
from typedpipe.models import MODELS
from typedpipe.pipeline.sources import SOURCES, Source, SourceContext
from typedpipe.pipeline.sources.decode import pixel_limit
from typedpipe.pipeline.stages import Stage
from typedpipe.pipeline.train.optimizers import OPTIMIZERS

Fraction = Annotated[float, Is[lambda f: 0.0 <= f < 1.0], "a number in [0, 1)"]
Positive = Annotated[float, Is[lambda x: x > 0], "a number > 0"]
Seed = Annotated[int, Is[lambda n: 0 <= n < 2**32], "an int in [0, 2**32)"]
# Upper bounds keep every size that allocates (arrays, class names, step counters)
# far from overflow and out-of-memory, before anything runs.
Epochs = Annotated[int, Is[lambda n: 0 < n <= 1_000_000], "an int in [1, 1000000]"]
BatchSize = Annotated[int, Is[lambda n: 0 < n <= 2**20], "an int in [1, 1048576]"]
Skips = Annotated[int, Is[lambda n: 0 < n <= 1_000_000], "an int in [1, 1000000]"]
Classes = Annotated[int, Is[lambda n: 2 <= n <= MAX_CLASSES], f"an int in [2, {MAX_CLASSES}]"]
Side = Annotated[int, Is[lambda n: 0 < n <= 65536], "an int in [1, 65536]"]
Channels = Annotated[int, Is[lambda n: 0 < n <= 4096], "an int in [1, 4096]"]
# The model's input is held to the same pixel limit as the files decoded for it.
ModelInput = Annotated[
    tuple[Side, Side, Channels],
    Is[lambda s: s[0] * s[1] <= pixel_limit()],
    "[height, width, channels]: each >= 1, channels <= 4096, "
    "height * width <= 89478485 (Pillow's pixel limit)",
]
# Where a model's weights come from: a safetensors file or a run's model/ bundle, a path
# relative to where typedpipe runs (as `[data] path` is). Its existence and fit are
# `check`'s to say (a bundle's config travels to hosts without the file).
WeightsPath = Annotated[
    str,
    Is[lambda s: bool(s.strip()) and "\0" not in s],
    'a path to a .safetensors file or a run\'s model/ folder ("runs/<name>/model")',
]
# A run folder is `runs/<name>`: a plain name can never point outside it.
PlainName = Annotated[
    str,
    Is[lambda s: bool(s) and s not in (".", "..") and all(c.isalnum() or c in "-_." for c in s)],
    "a plain name (letters, digits, '-', '_', '.'; no path)",
]


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """`[data]`: which source, how its labels are stored, how it is split, and its own keys."""

    source: Annotated[str, SOURCES] = "digits"
    labels: Literal["int", "onehot"] = "int"
    val_fraction: Fraction = 0.1
    test_fraction: Fraction = 0.2
    options: Any = None  # the source's Options; its keys sit in [data] beside these

    def __getattr__(self, key: str) -> Any:
        # A source's own keys read as `config.data.<key>`, as they are written.
        options = self.__dict__.get("options")
        if options is not None and key in {f.name for f in dataclasses.fields(options)}:
            return getattr(options, key)
        raise AttributeError(f"[data] of source {self.__dict__.get('source')!r} has no {key!r}")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """`[model]`: the architecture and the input contract it is built for."""

    name: Annotated[str, MODELS] = "small_cnn"
    input: ModelInput = (8, 8, 1)
    input_range: tuple[float, float] = (0.0, 1.0)
    num_classes: Classes = 10
    layers: tuple[dict[str, Any], ...] = ()
    weights: WeightsPath | None = None  # start from these instead of random weights


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """`[train]`: optimisation, precision and the numeric guard."""

    epochs: Epochs = 10
    batch_size: BatchSize = 64
    optimizer: Annotated[str, OPTIMIZERS] = "adam"
    learning_rate: Positive = 1e-3
    schedule: Literal["constant", "cosine"] = "cosine"
    weight_decay: Annotated[float, Is[lambda x: x >= 0], "a number >= 0"] = 1e-4
    momentum: Fraction = 0.9
    precision: Literal["float32", "bfloat16", "float16"] = "float32"
    clip_global_norm: Positive | None = 1.0
    on_nonfinite: Literal["skip", "stop"] = "skip"
    max_consecutive_skips: Skips = 20


@dataclasses.dataclass(frozen=True)
class TopLevel:
    """The scalar keys at the top of the file."""

    name: PlainName = "typedpipe"
    seed: Seed = 0


@dataclasses.dataclass(frozen=True)
class Config:
    """A whole pipeline: data, preprocessing stages, model and training."""

    name: str = "typedpipe"
    seed: int = 0
    data: DataConfig = DataConfig()
    preprocess: tuple[Stage, ...] = ()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()

    def source(self) -> Source:
        """The configured data source, opened with its options."""
        data, model = self.data, self.model
        cls = SOURCES.get(data.source)
        context = SourceContext(
            seed=self.seed,
            labels=data.labels,
            model_input=model.input,
            input_range=model.input_range,
            num_classes=model.num_classes,
        )
        return cls(data.options, context)

    def to_toml(self) -> str:
        """The resolved config, every default written out, loadable by `parse_config`."""
        import tomli_w

        table = _plain(dataclasses.asdict(self))
        options = table["data"].pop("options", None) or {}
        table["data"].update(options)
        table["preprocess"] = [
            {"op": stage.op, **_plain(dataclasses.asdict(stage))} for stage in self.preprocess
        ]
        return tomli_w.dumps(table)


def _plain(value: Any) -> Any:
    """Drop None (TOML has no null) and turn tuples into lists."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value
