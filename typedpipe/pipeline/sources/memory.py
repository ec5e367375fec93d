"""Moved to `typedpipe.memory`; these names stay here only until `pipeline/export`
imports them from there (then this module goes)."""

from typedpipe.memory import budget as budget
from typedpipe.memory import over_budget as over_budget
from typedpipe.memory import size_text as size_text
