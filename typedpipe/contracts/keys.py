"""Strict keys: a config table checked against a schema, every fault at once.

A schema maps each key to its annotation and whether it is required. The same
check serves the config's dataclasses, each source's options and each layer's
constructor: unknown keys suggest the closest valid one, values are checked by
beartype against their annotation (a bool is not a number), and a name that
must be registered gets the registry's "did you mean".
"""

import dataclasses
import difflib
import functools
import operator
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Annotated, Any, Literal, Protocol, runtime_checkable

from beartype import BeartypeConf
from beartype.door import is_bearable

from typedpipe.contracts import hints
from typedpipe.contracts.diagnostics import Diagnostic, config_value

#: key -> (annotation, required)
Schema = Mapping[str, tuple[Any, bool]]

# Accept an int where a float is declared (`learning_rate = 1`): that is TOML's
# spelling, not a coercion of user data.
_NUMERIC_TOWER = BeartypeConf(is_pep484_tower=True)


@runtime_checkable
class NameSet(Protocol):
    """What a `Registry` offers a schema: membership and the diagnostic for a miss."""

    def __contains__(self, name: object) -> bool: ...
    def unknown(self, name: object, *, where: str = "", place: str = "") -> Diagnostic: ...


def suggest(name: str, valid: Iterable[str]) -> str:
    """`did you mean 'epochs'?` for the closest valid name, or the list of all of them."""
    valid = sorted(valid)
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.6)
    if close:
        return f"did you mean {close[0]!r}?"
    return f"valid keys: {', '.join(valid)}" if valid else "this table takes no keys"


def unknown_keys(given: Iterable[str], valid: Iterable[str], where: str) -> list[Diagnostic]:
    """One `config.unknown_key` diagnostic per key of `given` that `valid` lacks.

    The fix renames the key to the closest valid one, or removes it when none is close.
    """
    valid = set(valid)
    found = []
    for key in given:
        if key in valid:
            continue
        close = difflib.get_close_matches(key, sorted(valid), n=1, cutoff=0.6)
        if close:
            hint = f"rename {key} to {close[0]} {hints.at(where)}"
        else:
            listed = f"valid keys: {', '.join(sorted(valid))}" if valid else "it takes no keys"
            hint = f"remove {key} from {where} ({listed})"
        found.append(
            Diagnostic(
                "config.unknown_key",
                f"unknown key {key!r} in {where}",
                stage=where,
                expected=", ".join(sorted(valid)),
                got=key,
                hint=hint,
            )
        )
    return found


def dataclass_schema(cls: type) -> dict[str, tuple[Any, bool]]:
    """A dataclass's fields as a schema: key -> (annotation, required). ClassVars are not keys."""
    hints = typing.get_type_hints(cls, include_extras=True)
    return {
        field.name: (
            hints[field.name],
            field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING,
        )
        for field in dataclasses.fields(cls)
    }


def describe(hint: Any) -> str:
    """How a message names an annotation: `'adam' | 'sgd'`, `a list of 2 ints`, `an int > 0`."""
    origin = typing.get_origin(hint)
    if origin is Annotated:
        said = [m for m in hint.__metadata__ if isinstance(m, str)]
        return said[0] if said else describe(typing.get_args(hint)[0])
    if origin is Literal:
        return " | ".join(repr(v) for v in typing.get_args(hint))
    if origin in (types.UnionType, typing.Union):
        return " or ".join(describe(a) for a in typing.get_args(hint) if a is not type(None))
    if origin is tuple:
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {describe(args[0])}"
        if isinstance(args[0], type):
            return f"a list of {len(args)} {describe(args[0])}s"
        return f"a list of {len(args)}, each {describe(args[0])}"
    return getattr(hint, "__name__", str(hint))


def _tupled(value: Any) -> Any:
    return tuple(_tupled(v) for v in value) if isinstance(value, list) else value


def _admits_bool(hint: Any) -> bool:
    """Whether `hint` names bool itself (TOML's `true` is no number, though bool subclasses int)."""
    if hint is bool or hint is Any:
        return True
    return any(_admits_bool(arg) for arg in typing.get_args(hint) if not isinstance(arg, str))


def _holds_bool(value: Any) -> bool:
    if isinstance(value, tuple):
        return any(_holds_bool(v) for v in value)
    return isinstance(value, bool)


# The largest float32: a config number past it becomes inf on the device (a scale of
# 1e308 multiplies every pixel to inf), so it is as non-finite as inf itself; and a
# TOML integer past it (any size parses) would overflow float().
_FLOAT32_MAX = 3.4028234663852886e38


def _holds_nonfinite(value: Any) -> bool:
    if isinstance(value, tuple):
        return any(_holds_nonfinite(v) for v in value)
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    return is_number and not abs(value) <= _FLOAT32_MAX  # NaN compares False


def _checkable(hint: Any) -> Any:
    """`hint` without the metadata beartype does not own (our descriptions, registries)."""
    origin = typing.get_origin(hint)
    if origin is Annotated:
        base, *metadata = typing.get_args(hint)
        validators = [m for m in metadata if type(m).__module__.startswith("beartype")]
        if not validators:
            return _checkable(base)
        return operator.getitem(Annotated, (_checkable(base), *validators))
    if origin in (types.UnionType, typing.Union):
        return functools.reduce(operator.or_, (_checkable(a) for a in typing.get_args(hint)))
    if origin is tuple:
        args = tuple(a if a is Ellipsis else _checkable(a) for a in typing.get_args(hint))
        return tuple.__class_getitem__(args)
    return hint


def _for_key(diagnostic: Diagnostic, names: NameSet, key: str) -> Diagnostic:
    """A registry's miss, its `got` and fix naming `key`: a registry named for one key
    (`activation`) also serves others (`se_gate`), which its own diagnostic would miss."""
    own = getattr(names, "key", key)
    if own == key:
        return diagnostic
    return dataclasses.replace(
        diagnostic,
        got=diagnostic.got.replace(f"{own} = ", f"{key} = ", 1),
        hint=diagnostic.hint.replace(f"{own} = ", f"{key} = ", 1),
    )


def _name_set(hint: Any) -> NameSet | None:
    if typing.get_origin(hint) is Annotated:
        return next((m for m in hint.__metadata__ if isinstance(m, NameSet)), None)
    return None


def dataclass_defaults(cls: type) -> dict[str, Any]:
    """The default of each field of a dataclass that has one."""
    return {
        field.name: field.default
        for field in dataclasses.fields(cls)
        if field.default is not dataclasses.MISSING
    }


def _literals(hint: Any) -> tuple[Any, ...]:
    """The values a `Literal` annotation allows (inside `Annotated` or `| None` too)."""
    origin = typing.get_origin(hint)
    if origin is Literal:
        return typing.get_args(hint)
    if origin is Annotated:
        return _literals(typing.get_args(hint)[0])
    if origin in (types.UnionType, typing.Union):
        return tuple(value for arg in typing.get_args(hint) for value in _literals(arg))
    return ()


def _value_fix(
    key: str, hint: Any, raw: Any, where: str, defaults: Mapping[str, Any], expected: str
) -> str:
    """The line that replaces a wrong value: the allowed value closest to it, else the default."""
    choices = [c for c in _literals(hint) if isinstance(c, str)]
    if choices and isinstance(raw, str):
        by_case = {c.lower(): c for c in choices}
        close = difflib.get_close_matches(raw.lower(), list(by_case), n=1, cutoff=0.6)
        if close:
            return hints.assign(where, **{key: by_case[close[0]]})
    if key not in defaults:
        return f"set {key} to {expected}"
    if defaults[key] is None:
        return f"remove {key} from {where} (the default: none)"
    return f"{hints.assign(where, **{key: defaults[key]})} (the default)"


def validate(
    schema: Schema,
    table: Mapping[str, Any],
    *,
    where: str,
    line: Callable[[str], str] = lambda key: "",
    defaults: Mapping[str, Any] | None = None,
) -> tuple[dict[str, Any], list[Diagnostic]]:
    """The values of `table` that meet `schema`, and a diagnostic for each that does not.

    Args:
        schema: key -> (annotation, required).
        table: the table as parsed from TOML.
        where: how a message names the table (`[train]`, `[model] layers[2] (conv)`).
        line: `file:line` of a key, for messages.
        defaults: key -> the value a wrong one is best replaced by (its default), for
            keys where that is always a sound choice; others get a description.

    Example:
        >>> validate({"epochs": (int, True)}, {"epochs": True}, where="[train]")[1][0].code
        'config.value'
    """
    found = []
    for diagnostic in unknown_keys(table, schema, where):
        prefix = line(diagnostic.got)
        message = f"{prefix}: {diagnostic.message}" if prefix else diagnostic.message
        found.append(dataclasses.replace(diagnostic, message=message))
    for key, (hint, required) in schema.items():
        if required and key not in table:
            prefix = line(key) or where
            found.append(
                config_value(
                    f"{prefix}: {where} needs {key!r}",
                    stage=where,
                    expected=f"{key} = {describe(hint)}",
                    got="missing",
                    hint=f"add {key} = ... to {where}",
                )
            )
    values = {}
    for key, raw in table.items():
        if key not in schema:
            continue
        hint = schema[key][0]
        value = _tupled(raw)
        names = _name_set(hint)
        if names is not None and isinstance(value, str) and value not in names:
            found.append(
                _for_key(names.unknown(value, where=line(key) or where, place=where), names, key)
            )
            continue
        wrong_bool = _holds_bool(value) and not _admits_bool(hint)
        if (
            wrong_bool
            or _holds_nonfinite(value)
            or not is_bearable(value, _checkable(hint), conf=_NUMERIC_TOWER)
        ):
            prefix = line(key)
            expected = describe(hint) + (
                " (finite: |x| <= 3.4e38, float32's range)" if _holds_nonfinite(value) else ""
            )
            found.append(
                config_value(
                    f"{prefix + ': ' if prefix else ''}{where} {key} must be {expected}",
                    stage=where,
                    expected=expected,
                    got=f"{key} = {raw!r}",
                    hint=_value_fix(key, hint, raw, where, defaults or {}, expected),
                )
            )
            continue
        values[key] = float(value) if hint is float else value
    return values, found
