"""The strict TOML loader: every fault in the file at once, each with its file and line.

An unknown key suggests the closest valid one; a value is checked against its
annotation (a bool is not a number, NaN is not a learning rate); an unknown
op, layer type, model, source or optimizer lists the registered names. Stage and
layer entries are validated here, so a typo never waits for the first trace.
"""

import math
import tomllib
from pathlib import Path
from typing import Any

from typedpipe.contracts import ConfigError, Diagnostic
from typedpipe.contracts.diagnostics import config_value
from typedpipe.contracts.keys import dataclass_schema, validate
from typedpipe.models import validate_entry
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


def load_config(path: str | Path) -> Config:
    """Read and validate a config file.

    Raises:
        ConfigError: every fault in the file at once (`config.*` codes).
        FileNotFoundError: no such file.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(
            Diagnostic(
                "config.syntax",
                f"{path.name} is not UTF-8 text: {err.reason} at byte {err.start}",
                stage=path.name,
                expected="a UTF-8 TOML file",
                got="undecodable bytes",
                hint="save the config as UTF-8",
            )
        ) from None
    return parse_config(text, source=path.name)


def parse_config(text: str, source: str = "<config>") -> Config:
    """Validate TOML text as a Config; see `load_config`."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(
            Diagnostic(
                "config.syntax",
                f"{source}: {err}",
                stage=source,
                expected="valid TOML",
                got=type(err).__name__,
                hint="fix the TOML syntax at the line named (strings need quotes, tables [name])",
            )
        ) from None
    except RecursionError:  # the parser recurses once per level of arrays or tables
        raise ConfigError(
            Diagnostic(
                "config.syntax",
                f"{source}: arrays or inline tables nested too deeply to read",
                stage=source,
                expected="valid TOML nested a few levels deep",
                got="hundreds of levels of [ or {",
                hint="no config value nests more than two levels: remove the extra brackets",
            )
        ) from None
    locate = _Locator(text, source)
    errors: list[Diagnostic] = []
    tables = {}
    for name in ("data", "model", "train"):
        table = raw.get(name, {})
        if isinstance(table, dict):
            tables[name] = table
        else:
            errors.append(_not_a_table(locate, name, table))
            tables[name] = {}
    top = {k: v for k, v in raw.items() if k not in _TABLES}
    scalars = _section(TopLevel, top, "the top level", None, locate, errors)
    data = _data(tables["data"], locate, errors)
    model = _section(ModelConfig, tables["model"], "[model]", "model", locate, errors)
    for index, entry in enumerate(model.layers):
        errors.extend(validate_entry(entry, index, lambda key: locate("model", "layers"))[2])
    train = _section(TrainConfig, tables["train"], "[train]", "train", locate, errors)
    preprocess = _stages(raw.get("preprocess", []), locate, errors)
    errors.extend(_cross_checks(data, model, locate))
    if errors:
        raise ConfigError(errors)
    return Config(scalars.name, scalars.seed, data, preprocess, model, train)


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
    index: int | None = None,
) -> Any:
    """Build dataclass `cls` from a table (its defaults where the table is faulty)."""
    values, found = validate(
        dataclass_schema(cls), table, where=where, line=lambda key: locate(name, key, index)
    )
    errors.extend(found)
    return cls() if found else cls(**values)


def _data(table: dict[str, Any], locate: _Locator, errors: list[Diagnostic]) -> DataConfig:
    """`[data]`: the common keys, and the configured source's own keys from its `Options`."""
    common = dataclass_schema(DataConfig)
    del common["options"]
    source = table.get("source", "digits")
    if source not in SOURCES:
        # Without a source its keys cannot be told from typos: report the name only.
        errors.append(SOURCES.unknown(source, where=locate("data", "source")))
        return DataConfig()
    options_type = SOURCES.get(source).Options
    options_schema = dataclass_schema(options_type)
    schema = {**common, **options_schema}
    values, found = validate(schema, table, where="[data]", line=lambda key: locate("data", key))
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
        if op not in STAGES:
            where = f"{locate('preprocess', 'op', index)}: [[preprocess]] #{index + 1}"
            errors.append(STAGES.unknown(op, where=where))
            continue
        cls = STAGES.get(op)
        count = len(errors)
        values = _section_values(cls, params, locate, errors, index)
        if len(errors) == count:
            try:
                stages.append(cls(**values))
            except ConfigError as err:
                errors.extend(err.diagnostics)
    return tuple(stages)


def _section_values(
    cls: type[Stage], params: dict[str, Any], locate: _Locator, errors: list[Diagnostic], index: int
) -> dict[str, Any]:
    values, found = validate(
        dataclass_schema(cls),
        params,
        where=f"[[preprocess]] #{index + 1} ({cls.op})",
        line=lambda key: locate("preprocess", key, index),
    )
    errors.extend(found)
    return values


def _cross_checks(data: DataConfig, model: ModelConfig, locate: _Locator) -> list[Diagnostic]:
    """Rules over several values, which no single annotation can state."""
    found = []
    low, high = model.input_range
    if not (low < high and math.isfinite(high - low)):
        found.append(
            config_value(
                f"{locate('model', 'input_range')}: [model] input_range must be [low, high] "
                "with low < high (and a finite width)",
                stage="[model]",
                expected="[low, high] with low < high, high - low finite",
                got=f"input_range = {list(model.input_range)}",
                hint="input_range = [0.0, 1.0]",
            )
        )
    if data.val_fraction + data.test_fraction < 1:
        return found
    return [
        *found,
        config_value(
            f"{locate('data', 'test_fraction')}: [data] val_fraction + test_fraction must be < 1",
            stage="[data]",
            expected="val_fraction + test_fraction < 1",
            got=f"val_fraction = {data.val_fraction}, test_fraction = {data.test_fraction}",
            hint="leave some data for training: test_fraction = 0.2, val_fraction = 0.1",
        ),
    ]
