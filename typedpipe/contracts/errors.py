"""The errors that carry diagnostics: data faults, config faults, and a stopped run."""

from collections.abc import Iterable

from typedpipe.contracts.diagnostics import Diagnostic


class _DiagnosticError(Exception):
    """Carries one or more diagnostics; its message is all of them, in order."""

    def __init__(self, diagnostics: Diagnostic | Iterable[Diagnostic]):
        if isinstance(diagnostics, Diagnostic):
            diagnostics = (diagnostics,)
        self.diagnostics: tuple[Diagnostic, ...] = tuple(diagnostics)
        super().__init__("\n".join(str(d) for d in self.diagnostics))

    @property
    def diagnostic(self) -> Diagnostic:
        """The first diagnostic: the one a single-fault caller cares about."""
        return self.diagnostics[0]


class ContractError(_DiagnosticError, TypeError):
    """Your data does not meet a stage's or layer's contract."""


class ConfigError(_DiagnosticError, ValueError):
    """Your config (or a stage's or layer's construction) is wrong."""


class TrainingStopped(_DiagnosticError, RuntimeError):
    """The numeric guard ended training: too many steps produced NaN/inf."""


for _cls in (ContractError, ConfigError, TrainingStopped):
    _cls.__module__ = "typedpipe"
