"""One registry, one way: stages, layers, models, sources, optimizers and activations.

A `Registry` maps config names to objects. A name registers once; an unknown name
is a `ConfigError` whose diagnostic lists the valid names, suggests the closest
one and says where in the config it was written. `temporary()` scopes a
registration to a `with` block, for tests.
"""

import contextlib
import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar, overload

from typedpipe.contracts import hints
from typedpipe.contracts.diagnostics import Diagnostic
from typedpipe.contracts.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Names a config can use, each bound to one object.

    Args:
        kind: what the names are, for messages ("preprocessing op", "layer type").
        key: the config key that holds a name (`op`, `type`, `name`, `source`).
        table: the config table the key sits in (`[[preprocess]]`, `[model]`).
        code: the diagnostic code of an unknown name.

    Example:
        >>> colours = Registry("colour", key="colour", table="[paint]")
        >>> colours.register("red", 0xFF0000)
        >>> colours.get("red")
        16711680
    """

    def __init__(self, kind: str, *, key: str, table: str, code: str = "config.value"):
        self.kind, self.key, self.table, self.code = kind, key, table, code
        self._entries: dict[str, T] = {}

    @overload
    def register(self, name: str) -> Callable[[T], T]: ...
    @overload
    def register(self, name: str, entry: T) -> None: ...

    def register(self, name, entry=None):
        """Bind `name` to `entry`; without `entry`, a decorator that binds what it decorates.

        Raises:
            ValueError: `name` is already registered (a programming error, not a config fault).
        """

        def add(value: T) -> T:
            if not isinstance(name, str) or not name:
                raise ValueError(f"a {self.kind} needs a non-empty string name, got {name!r}")
            if name in self._entries:
                raise ValueError(
                    f"{self.kind} {name!r} is already registered ({self._entries[name]!r})"
                )
            self._entries[name] = value
            return value

        if entry is None:
            return add
        add(entry)
        return None

    def get(self, name: object, *, where: str = "") -> T:
        """The entry of `name`.

        Args:
            name: the name as written in the config (any value: a config may hold anything).
            where: `file:line` of the name, prefixed to the message.

        Raises:
            ConfigError: the name is not registered (`self.code`, with "did you mean").
        """
        if isinstance(name, str) and name in self._entries:
            return self._entries[name]
        raise ConfigError(self.unknown(name, where=where))

    def unknown(self, name: object, *, where: str = "", place: str = "") -> Diagnostic:
        """The diagnostic for a name that is not registered: the config line that fixes it.

        Args:
            name: the name as written.
            where: `file:line` of the name, prefixed to the message.
            place: the table or entry that holds it (`[train]`, `[[preprocess]] #2`), which
                the fix names; by default the registry's table.
        """
        names = self.names()
        prefix = f"{where}: " if where else ""
        close = difflib.get_close_matches(name, names, n=1) if isinstance(name, str) else []
        at = hints.at(place or self.table)
        if close:
            hint = f'{self.key} = "{close[0]}" {at} (did you mean {close[0]!r}?)'
        else:
            hint = f"{self.key} = one of: {', '.join(repr(n) for n in names)}"
        return Diagnostic(
            self.code,
            f"{prefix}no {self.kind} named {name!r}",
            stage=self.table,
            expected=" | ".join(names),
            got=f"{self.key} = {name!r}",
            hint=hint,
        )

    def names(self) -> list[str]:
        """Every registered name, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        # A config may hold anything where a name belongs: a list or table is no name.
        return isinstance(name, str) and name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    @contextlib.contextmanager
    def temporary(self, name: str, entry: T) -> Iterator[T]:
        """Register `entry` under `name` for the `with` block only."""
        self.register(name, entry)
        try:
            yield entry
        finally:
            del self._entries[name]

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self.names())})"
