"""Strict keys: an unknown name is an error that suggests the closest valid one."""

import difflib
from collections.abc import Iterable

from typedpipe.contracts.diagnostics import Diagnostic


def suggest(name: str, valid: Iterable[str]) -> str:
    """`did you mean 'epochs'?` for the closest valid name, or the list of all of them."""
    valid = sorted(valid)
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.6)
    if close:
        return f"did you mean {close[0]!r}?"
    return f"valid keys: {', '.join(valid)}" if valid else "this table takes no keys"


def unknown_keys(given: Iterable[str], valid: Iterable[str], where: str) -> list[Diagnostic]:
    """One `config.unknown_key` diagnostic per key of `given` that `valid` lacks."""
    valid = set(valid)
    return [
        Diagnostic(
            "config.unknown_key",
            f"unknown key {key!r} in {where}",
            stage=where,
            expected=", ".join(sorted(valid)),
            got=key,
            hint=suggest(key, valid),
        )
        for key in given
        if key not in valid
    ]
