"""The TOML config: strict from the first key. Unknown keys suggest the closest valid one.

Every fault in the file is collected and raised together as one ConfigError, each
diagnostic naming the file, line, table and key.
"""

import dataclasses
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import tomli_w
from beartype import BeartypeConf
from beartype.door import is_bearable

from typedpipe.contracts import ConfigError, Diagnostic, unknown_keys
from typedpipe.pipeline.stages import Stage, make_stage, stage_class

# Accept an int where a float is declared (`learning_rate = 1`): that is TOML's
# spelling, not a coercion of user data.
_NUMERIC_TOWER = BeartypeConf(is_pep484_tower=True)


@dataclasses.dataclass(frozen=True)
class DataConfig:
    source: Literal["digits", "npz", "imagefolder", "synthetic"] = "digits"
    path: str | None = None
    mode: Literal["rgb", "gray", "keep"] = "keep"
    size: tuple[int, int] | None = None
    labels: Literal["int", "onehot"] = "int"
    layout: Literal["nhwc", "nchw"] = "nhwc"
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    num_samples: int = 1024


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    name: str = "small_cnn"
    input: tuple[int, int, int] = (8, 8, 1)
    input_range: tuple[float, float] = (0.0, 1.0)
    num_classes: int = 10
    layers: tuple[dict[str, Any], ...] = ()


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10
    batch_size: int = 64
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    learning_rate: float = 1e-3
    schedule: Literal["constant", "cosine"] = "cosine"
    weight_decay: float = 1e-4
    momentum: float = 0.9
    precision: Literal["float32", "bfloat16", "float16"] = "float32"
    clip_global_norm: float | None = 1.0
    on_nonfinite: Literal["skip", "stop"] = "skip"
    max_consecutive_skips: int = 20


@dataclasses.dataclass(frozen=True)
class Config:
    """A whole pipeline: data, preprocessing stages, model and training."""

    name: str = "typedpipe"
    seed: int = 0
    data: DataConfig = DataConfig()
    preprocess: tuple[Stage, ...] = ()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()

    def to_toml(self) -> str:
        """The resolved config, every default written out, loadable by `parse_config`."""
        table = _plain(dataclasses.asdict(self))
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


def load_config(path: str | Path) -> Config:
    """Read and validate a config file.

    Raises:
        ConfigError: every fault in the file at once (`config.*` codes).
        FileNotFoundError: no such file.
    """
    path = Path(path)
    return parse_config(path.read_text(encoding="utf-8"), source=path.name)


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
                hint="fix the TOML syntax at the line named (strings need quotes, tables [name])",
            )
        ) from None
    locate = _Locator(text, source)
    errors: list[Diagnostic] = []
    sections = {}
    for table_name in ("data", "model", "train"):
        table = raw.get(table_name, {})
        if not isinstance(table, dict):
            errors.append(_wrong_type(locate, None, table_name, table, "a [table]"))
            continue
        cls = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}[table_name]
        sections[table_name] = _build(cls, table, f"[{table_name}]", locate, errors)
    preprocess = _build_stages(raw.get("preprocess", []), locate, errors)
    top = {k: v for k, v in raw.items() if k not in ("data", "model", "train", "preprocess")}
    scalars = _build(_TopLevel, top, "the top level", locate, errors)
    if errors:
        raise ConfigError(errors)
    config = Config(name=scalars.name, seed=scalars.seed, preprocess=preprocess, **sections)
    _check_values(config, locate)
    return config


@dataclasses.dataclass(frozen=True)
class _TopLevel:
    """The scalar keys; the tables are filtered out and read on their own."""

    name: str = "typedpipe"
    seed: int = 0


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


def _wrong_type(
    locate: _Locator,
    table: str | None,
    key: str,
    value: Any,
    expected: str,
    index: int | None = None,
) -> Diagnostic:
    where = f"[{table}] {key}" if table else key
    return Diagnostic(
        "config.value",
        f"{locate(table, key, index)}: {where} must be {expected}",
        stage=f"[{table}]" if table else "config",
        expected=expected,
        got=f"{key} = {value!r}",
        hint=f"set {key} to {expected}",
    )


def _describe(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin is Literal:
        return " | ".join(repr(v) for v in typing.get_args(hint))
    if origin in (types.UnionType, typing.Union):
        return " or ".join(_describe(a) for a in typing.get_args(hint) if a is not type(None))
    if origin is tuple:
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_describe(args[0])}"
        return f"a list of {len(args)} {_describe(args[0])}s"
    return getattr(hint, "__name__", str(hint))


def _tupled(value: Any) -> Any:
    return tuple(_tupled(v) for v in value) if isinstance(value, list) else value


def _fields(cls: type) -> tuple[dict[str, Any], set[str]]:
    """A dataclass's field types, and the names that have no default."""
    hints = typing.get_type_hints(cls)
    fields = dataclasses.fields(cls)
    required = {
        f.name
        for f in fields
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
    return {f.name: hints[f.name] for f in fields}, required


def _validated(
    cls: type,
    table: dict[str, Any],
    where: str,
    locate: _Locator,
    errors: list[Diagnostic],
    index: int | None = None,
) -> dict[str, Any]:
    """The table's values, checked against dataclass `cls`; every fault goes to `errors`."""
    hints, required = _fields(cls)
    table_name = where.strip("[]") if where.startswith("[") else None
    for diagnostic in unknown_keys(table, hints, where):
        line = locate(table_name, diagnostic.got, index)
        errors.append(dataclasses.replace(diagnostic, message=f"{line}: {diagnostic.message}"))
    for key in sorted(required - set(table)):
        errors.append(
            Diagnostic(
                "config.value",
                f"{locate(table_name, 'op', index)}: {where} needs {key!r}",
                stage=where,
                expected=f"{key} = {_describe(hints[key])}",
                got="missing",
                hint=f"add {key} = ... to {where}",
            )
        )
    values = {}
    for key, value in table.items():
        if key not in hints:
            continue
        value = _tupled(value)
        if not is_bearable(value, hints[key], conf=_NUMERIC_TOWER):
            errors.append(_wrong_type(locate, table_name, key, value, _describe(hints[key]), index))
            continue
        values[key] = float(value) if hints[key] is float else value
    return values


def _build(
    cls: type, table: dict[str, Any], where: str, locate: _Locator, errors: list[Diagnostic]
):
    """Build dataclass `cls` from a TOML table (its defaults where the table is faulty)."""
    count = len(errors)
    values = _validated(cls, table, where, locate, errors)
    return cls(**values) if len(errors) == count else cls()


def _build_stages(entries: Any, locate: _Locator, errors: list[Diagnostic]) -> tuple[Stage, ...]:
    if not isinstance(entries, list):
        errors.append(_wrong_type(locate, None, "preprocess", entries, "[[preprocess]] tables"))
        return ()
    stages = []
    for index, entry in enumerate(entries):
        params = dict(entry)
        op = params.pop("op", None)
        where = f"[[preprocess]] #{index + 1}"
        try:
            cls = stage_class(str(op))
        except ConfigError as err:
            line = locate("preprocess", "op", index)
            errors.extend(
                dataclasses.replace(d, message=f"{line}: {where}: {d.message}")
                for d in err.diagnostics
            )
            continue
        count = len(errors)
        values = _validated(cls, params, "[preprocess]", locate, errors, index)
        if len(errors) == count:
            try:
                stages.append(make_stage(op, **values))
            except ConfigError as err:
                errors.extend(err.diagnostics)
    return tuple(stages)


def _check_values(config: Config, locate: _Locator) -> None:
    """Range checks a type cannot state."""
    errors = []

    def require(ok: bool, table: str, key: str, value: Any, expected: str, hint: str):
        if not ok:
            errors.append(
                Diagnostic(
                    "config.value",
                    f"{locate(table, key)}: [{table}] {key} must be {expected}",
                    stage=f"[{table}]",
                    expected=expected,
                    got=f"{key} = {value!r}",
                    hint=hint,
                )
            )

    data, model, train = config.data, config.model, config.train
    fractions = data.val_fraction + data.test_fraction
    require(
        0 <= data.val_fraction < 1,
        "data",
        "val_fraction",
        data.val_fraction,
        "in [0, 1)",
        "val_fraction = 0.1",
    )
    require(
        0 <= data.test_fraction < 1,
        "data",
        "test_fraction",
        data.test_fraction,
        "in [0, 1)",
        "test_fraction = 0.2",
    )
    require(
        fractions < 1,
        "data",
        "test_fraction",
        data.test_fraction,
        "less than 1 - val_fraction",
        "leave some data for training",
    )
    require(
        data.source in ("digits", "synthetic") or data.path is not None,
        "data",
        "path",
        data.path,
        f"set for source = {data.source!r}",
        'path = "data/train"',
    )
    require(
        data.num_samples > 0, "data", "num_samples", data.num_samples, "> 0", "num_samples = 1024"
    )
    require(
        data.size is None or min(data.size) > 0,
        "data",
        "size",
        data.size,
        "two positive ints",
        "size = [64, 64]",
    )
    require(
        min(model.input) > 0,
        "model",
        "input",
        model.input,
        "three positive ints (height, width, channels)",
        "input = [8, 8, 1]",
    )
    require(
        model.num_classes >= 2,
        "model",
        "num_classes",
        model.num_classes,
        ">= 2",
        "num_classes = 10",
    )
    lo, hi = model.input_range
    require(
        lo < hi,
        "model",
        "input_range",
        model.input_range,
        "[low, high] with low < high",
        "input_range = [0.0, 1.0]",
    )
    for key in ("epochs", "batch_size", "max_consecutive_skips"):
        value = getattr(train, key)
        require(value > 0, "train", key, value, "> 0", f"{key} = {getattr(TrainConfig, key)}")
    require(
        train.learning_rate > 0,
        "train",
        "learning_rate",
        train.learning_rate,
        "> 0",
        "learning_rate = 1e-3",
    )
    require(
        train.clip_global_norm is None or train.clip_global_norm > 0,
        "train",
        "clip_global_norm",
        train.clip_global_norm,
        "> 0",
        "clip_global_norm = 1.0",
    )
    if errors:
        raise ConfigError(errors)
