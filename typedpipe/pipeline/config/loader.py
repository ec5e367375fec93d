"""The strict TOML loader: every fault in the file at once, each with its file and line.

An unknown key suggests the closest valid one; a value is checked against its
annotation (a bool is not a number, NaN is not a learning rate); an unknown
op, layer type, model, source or optimizer lists the registered names. Stage and
layer entries are validated here, so a typo never waits for the first trace.
"""

import dataclasses
import math
import tomllib
from pathlib import Path
from typing import Any

from typedpipe.contracts import ConfigError, Diagnostic
from typedpipe.contracts.diagnostics import config_value
from typedpipe.contracts.hints import THIS_STAGE
from typedpipe.contracts.keys import dataclass_defaults, dataclass_schema, validate
from typedpipe.models import validate_entry
from typedpipe.models.classifier import logits_activation, logits_layer
from typedpipe.pipeline.config.recipe import train_faults, unread_keys
from typedpipe.pipeline.config.schema import (
    Config,
    DataConfig,
    ModelConfig,
    TopLevel,
    TrainConfig,
)
from typedpipe.pipeline.sources import SOURCES
from typedpipe.pipeline.stages import STAGES, Stage

_TABLES = ("data", "model", "train", "preprocess")

# The value a wrong one is replaced by in a fix, table by table (others: the defaults).
# `[model]` has none: its input, range and class count follow from the data, so no
# default is a sound guess; nor do a source's keys, which describe the files.
_SAFE_DEFAULTS: dict[type, dict[str, Any]] = {
    ModelConfig: {},
    DataConfig: {"val_fraction": 0.1, "test_fraction": 0.2},
}


@dataclasses.dataclass(frozen=True)
class Draft:
    """A config as far as it could be read: every fault in it, and which parts they touch.

    A faulty table holds its defaults where its values were wrong, so that
    `check` can still survey the data and check what the faults leave sound:
    `faulty` names the parts it must not trust (`data`, `model`, `model.layers`,
    `train`, `preprocess`, `top`).
    """

    config: Config
    diagnostics: tuple[Diagnostic, ...] = ()
    faulty: frozenset[str] = frozenset()

    def result(self) -> Config:
        """The config, or a ConfigError carrying every fault."""
        if self.diagnostics:
            raise ConfigError(self.diagnostics)
        return self.config


def load_config(path: str | Path) -> Config:
    """Read and validate a config file.

    Raises:
        ConfigError: every fault in the file at once (`config.*` codes).
        FileNotFoundError: no such file.
    """
    return load_draft(path).result()


def parse_config(text: str, source: str = "<config>") -> Config:
    """Validate TOML text as a Config; see `load_config`."""
    return parse_draft(text, source).result()


def load_draft(path: str | Path) -> Draft:
    """Read a config file as far as it can be read; see `Draft`.

    Raises:
        FileNotFoundError: no such file.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        return _unreadable(
            Diagnostic(
                "config.syntax",
                f"{path.name} is not UTF-8 text: {err.reason} at byte {err.start}",
                stage=path.name,
                expected="a UTF-8 TOML file",
                got="undecodable bytes",
                hint="save the config as UTF-8",
            )
        )
    return parse_draft(text, source=path.name)


def parse_draft(text: str, source: str = "<config>") -> Draft:
    """Validate TOML text as far as it can be read; see `Draft`."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        return _unreadable(
            Diagnostic(
                "config.syntax",
                f"{source}: {err}",
                stage=source,
                expected="valid TOML",
                got=type(err).__name__,
                hint="fix the TOML syntax at the line named (strings need quotes, tables [name])",
            )
        )
    except RecursionError:  # the parser recurses once per level of arrays or tables
        return _unreadable(
            Diagnostic(
                "config.syntax",
                f"{source}: arrays or inline tables nested too deeply to read",
                stage=source,
                expected="valid TOML nested a few levels deep",
                got="hundreds of levels of [ or {",
                hint="no config value nests more than two levels: remove the extra brackets",
            )
        )
    locate = _Locator(text, source)
    errors: list[Diagnostic] = []
    faulty: set[str] = set()

    def part(name: str, found: list[Diagnostic]) -> None:
        errors.extend(found)
        if found:
            faulty.add(name)

    tables = {}
    for name in ("data", "model", "train"):
        table = raw.get(name, {})
        if isinstance(table, dict):
            tables[name] = table
        else:
            part(name, [_not_a_table(locate, name, table)])
            tables[name] = {}
    top = {k: v for k, v in raw.items() if k not in _TABLES}
    found: list[Diagnostic] = []
    scalars = _section(TopLevel, top, "the top level", None, locate, found, _TABLES)
    part("top", found)
    found = []
    data = _data(tables["data"], locate, found)
    part("data", found)
    found = []
    model = _section(ModelConfig, tables["model"], "[model]", "model", locate, found)
    part("model", found)
    # Faulty layers leave the model's input, range and head sound: the data is still
    # held against them.
    part("model.layers", _layers(model, locate))
    found = []
    unread = unread_keys(tables["train"], lambda key: locate("train", key), found)
    train_table = {k: v for k, v in tables["train"].items() if k not in unread}
    train = _section(TrainConfig, train_table, "[train]", "train", locate, found)
    if not found:
        sound_model = None if "model" in faulty else model
        found = train_faults(train, sound_model, lambda key: locate("train", key))
    part("train", found)
    found = []
    preprocess = _stages(raw.get("preprocess", []), locate, found)
    part("preprocess", found)
    for name, diagnostic in _cross_checks(data, model, locate):
        part(name, [diagnostic])
    config = Config(scalars.name, scalars.seed, data, preprocess, model, train)
    return Draft(config, tuple(errors), frozenset(faulty))


def _unreadable(diagnostic: Diagnostic) -> Draft:
    return Draft(Config(), (diagnostic,), frozenset(("top", "model.layers", *_TABLES)))


class _Locator:
    """Finds the line of `key` inside `[table]` (or the n-th `[[table]]`) of the source."""

    def __init__(self, text: str, source: str):
        self.source = source
        self.lines = text.splitlines()

    def __call__(self, table: str | None, key: str | None, index: int | None = None) -> str:
        current, seen = None, -1
        for number, line in enumerate(self.lines, start=1):
            stripped = line.strip()
            if stripped.startswith("["):
                current = stripped.strip("[]").strip()
                if stripped.startswith("[[") and current == table:
                    seen += 1
                continue
            in_table = current == table and (index is None or seen == index)
            if in_table and key and stripped.split("=")[0].strip() == key:
                return f"{self.source}:{number}"
        return self.source


def _not_a_table(locate: _Locator, name: str, value: Any) -> Diagnostic:
    return config_value(
        f"{locate(None, name)}: {name} must be a [{name}] table",
        stage="config",
        expected=f"[{name}]",
        got=f"{name} = {value!r}",
        hint=f"write the keys under a [{name}] header",
    )


def _section(
    cls: type,
    table: dict[str, Any],
    where: str,
    name: str | None,
    locate: _Locator,
    errors: list[Diagnostic],
    tables: tuple[str, ...] = (),
) -> Any:
    """Build dataclass `cls` from a table (its defaults where the table is faulty).

    `tables` are the names of the tables within it, read apart (the top level's
    `[train]`...): an unknown key is held against them too (`[trian]` is a typo).
    """
    values, found = validate(
        {**dataclass_schema(cls), **{nested: (dict, False) for nested in tables}},
        table,
        where=where,
        line=lambda key: locate(name, key),
        defaults=_SAFE_DEFAULTS.get(cls, dataclass_defaults(cls)),
    )
    errors.extend(found)
    return cls(**values)  # the sound values; the defaults where a value was wrong


def _data(table: dict[str, Any], locate: _Locator, errors: list[Diagnostic]) -> DataConfig:
    """`[data]`: the common keys, and the configured source's own keys from its `Options`."""
    common = dataclass_schema(DataConfig)
    del common["options"]
    source = table.get("source", "digits")
    if source not in SOURCES:
        # Without a source its keys cannot be told from typos: report the name only.
        errors.append(SOURCES.unknown(source, where=locate("data", "source"), place="[data]"))
        return DataConfig()
    options_type = SOURCES.get(source).Options
    options_schema = dataclass_schema(options_type)
    schema = {**common, **options_schema}
    values, found = validate(
        schema,
        table,
        where="[data]",
        line=lambda key: locate("data", key),
        defaults=_SAFE_DEFAULTS[DataConfig],
    )
    if found:
        errors.extend(found)
        return DataConfig()
    options = options_type(**{k: v for k, v in values.items() if k in options_schema})
    return DataConfig(**{k: v for k, v in values.items() if k in common}, options=options)


def _stages(entries: Any, locate: _Locator, errors: list[Diagnostic]) -> tuple[Stage, ...]:
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        errors.append(
            config_value(
                f"{locate(None, 'preprocess')}: preprocess must be [[preprocess]] tables",
                stage="[[preprocess]]",
                expected='[[preprocess]] tables, each with op = "..."',
                got=f"preprocess = {entries!r}",
                hint='[[preprocess]]\nop = "to_float"',
            )
        )
        return ()
    stages = []
    for index, entry in enumerate(entries):
        params = dict(entry)
        op = params.pop("op", None)
        place = f"[[preprocess]] #{index + 1}"
        if op not in STAGES:
            where = f"{locate('preprocess', 'op', index)}: {place}"
            errors.append(STAGES.unknown(op, where=where, place=place))
            continue
        cls = STAGES.get(op)
        count = len(errors)
        values = _section_values(cls, params, locate, errors, index)
        if len(errors) == count:
            try:
                stages.append(cls(**values))
            except ConfigError as err:
                # A stage's own check knows its keys, not its place in the file.
                located = f"{place} ({op})"
                errors.extend(
                    dataclasses.replace(d, stage=located, hint=d.hint.replace(THIS_STAGE, located))
                    for d in err.diagnostics
                )
    return tuple(stages)


def _section_values(
    cls: type[Stage], params: dict[str, Any], locate: _Locator, errors: list[Diagnostic], index: int
) -> dict[str, Any]:
    values, found = validate(
        dataclass_schema(cls),
        params,
        where=f"[[preprocess]] #{index + 1} ({cls.op})",
        line=lambda key: locate("preprocess", key, index),
        # A list default (a mean per channel) depends on the data: never proposed.
        defaults={k: v for k, v in dataclass_defaults(cls).items() if not isinstance(v, tuple)},
    )
    errors.extend(found)
    return values


def _layers(model: ModelConfig, locate: _Locator) -> list[Diagnostic]:
    """Each `[model] layers` entry against its layer; an activation on the logits first."""
    found = []
    logits = logits_activation(model.layers) if model.name == "sequential" else None
    if logits is not None:
        found.append(
            dataclasses.replace(logits, message=f"{locate('model', 'layers')}: {logits.message}")
        )
    for index, entry in enumerate(model.layers):
        if logits is not None and index == logits_layer(model.layers):
            # Reported once, as what it is: an activation on the logits, whatever its name.
            entry = {k: v for k, v in entry.items() if k != "activation"}
        found.extend(validate_entry(entry, index, lambda key: locate("model", "layers"))[2])
    return found


def _cross_checks(
    data: DataConfig, model: ModelConfig, locate: _Locator
) -> list[tuple[str, Diagnostic]]:
    """Rules over several values, which no single annotation can state: (part, fault)."""
    found = []
    low, high = model.input_range
    if not (low < high and math.isfinite(high - low)):
        found.append(
            (
                "model",
                config_value(
                    f"{locate('model', 'input_range')}: [model] input_range must be [low, high] "
                    "with low < high (and a finite width)",
                    stage="[model]",
                    expected="[low, high] with low < high, high - low finite",
                    got=f"input_range = {list(model.input_range)}",
                    hint="input_range = [0.0, 1.0] under [model]",
                ),
            )
        )
    if data.val_fraction + data.test_fraction >= 1:
        found.append(
            (
                "data",
                config_value(
                    f"{locate('data', 'test_fraction')}: [data] val_fraction + test_fraction "
                    "must be < 1",
                    stage="[data]",
                    expected="val_fraction + test_fraction < 1",
                    got=f"val_fraction = {data.val_fraction}, test_fraction = {data.test_fraction}",
                    hint="val_fraction = 0.1 and test_fraction = 0.2 under [data] (leaves 70% "
                    "for training)",
                ),
            )
        )
    return found
