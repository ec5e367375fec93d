"""Findings as people and programs read them: tables on a terminal, plain blocks in
logs, one strict JSON object under `--json`."""

import json
from collections.abc import Sequence

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from typedpipe.contracts import Diagnostic
from typedpipe.contracts.diagnostics import visible

# soft_wrap: a message keeps its lines whole, so logs and tests can grep it.
stderr = Console(stderr=True, soft_wrap=True)

# Offending files or indices listed in the table; --json carries up to MAX_ITEMS.
_ITEMS_SHOWN = 5
# Plain output: the severity column, and the indent of a block's other lines.
_INDENT = 8
#: Narrower than this, the table's text columns shrink to a word each: plain text reads better.
TABLE_MIN_WIDTH = 72


def print_json(args, result: dict) -> None:
    """The command's one JSON object, on the real stdout (`args.stdout`)."""
    print(json.dumps(result), file=args.stdout)


def shown(text: str, *, newlines: bool = True) -> str:
    """Text from files or configs for a rich table: controls and escapes made visible
    (an ANSI sequence in a class name never reaches the terminal), markup escaped."""
    return escape(visible(text, newlines=newlines))


def counted(diagnostics: Sequence[Diagnostic]) -> str:
    """Errors and warnings counted apart: "2 errors, 1 warning"."""
    errors = sum(d.is_error for d in diagnostics)
    warnings = len(diagnostics) - errors
    counts = ((errors, "error"), (warnings, "warning"))
    parts = [f"{n:,} {word}{'s' if n != 1 else ''}" for n, word in counts if n]
    return ", ".join(parts) or "no problems"


def _listed(d: Diagnostic) -> str:
    """The first few offending items, and how many more there are in all."""
    listed = [visible(item) for item in d.items[:_ITEMS_SHOWN]]
    more = max(d.total_items, len(d.items)) - len(listed)
    return ", ".join(listed) + (f", ... {more:,} more" if more else "")


def _items_label(d: Diagnostic) -> str:
    # Array sources name samples by index ("#17"); everything else names files.
    return "samples" if all(item.startswith("#") for item in d.items) else "files"


def plain_diagnostics(diagnostics: Sequence[Diagnostic]) -> str:
    """Diagnostics as plain aligned text, one block each, for logs and pipes.

    No line is ever wrapped and the code always stands whole on its block's first
    line, so `grep numeric.nonfinite` finds it in any CI log.
    """
    ordered = sorted(diagnostics, key=lambda d: not d.is_error)  # errors first, stable
    width = max((len(d.code) for d in ordered), default=0)
    pad = " " * _INDENT

    def field(name: str, text: str) -> list[str]:
        # Continuation lines of a multi-line value line up under its first line.
        head = f"{name + ':':<10}"
        lines = visible(text, newlines=True).splitlines() or [""]
        return [pad + head + lines[0], *(pad + " " * len(head) + line for line in lines[1:])]

    blocks = [counted(diagnostics)]
    for d in ordered:
        where = f"   in {visible(d.stage)}" if d.stage else ""
        block = [f"{d.severity:<{_INDENT}}{d.code:<{width}}{where}".rstrip()]
        block += [pad + line for line in visible(d.message, newlines=True).splitlines()]
        if d.expected or d.got:
            block += field("expected", d.expected) + field("got", d.got)
        if d.hint:
            block += field("fix", d.hint)
        if d.items:
            block += field(_items_label(d), _listed(d))
        blocks.append("\n".join(block))
    return "\n\n".join(blocks)


def tabular(console: Console) -> bool:
    """A rich table only on a colour terminal wide enough for one; pipes, NO_COLOR,
    TERM=dumb and narrow windows get plain text."""
    return (
        console.is_terminal
        and not console.is_dumb_terminal
        and not console.no_color
        and console.width >= TABLE_MIN_WIDTH
    )


def render_diagnostics(diagnostics: Sequence[Diagnostic], console: Console) -> None:
    """A table on a terminal, plain aligned blocks anywhere else (see `plain_diagnostics`)."""
    if not tabular(console):
        print(plain_diagnostics(diagnostics), file=console.file, flush=True)
        return
    table = Table(title=counted(diagnostics), show_lines=True, expand=True)
    width = max(len(d.code) for d in diagnostics) if diagnostics else 4
    # The code is what users grep and look up: never folded, whatever the width.
    table.add_column("code", no_wrap=True, min_width=width)
    for column in ("stage", "problem", "expected / got", "fix"):
        table.add_column(column, overflow="fold")
    for d in sorted(diagnostics, key=lambda d: not d.is_error):
        # Messages and hints quote config lines ("[data]", "[[preprocess]]") and hold
        # file and class names: plain, visible text, never rich markup or terminal codes.
        style = "red" if d.is_error else "yellow"
        problem = shown(d.message)
        if d.items:
            problem += f"\n[dim]{_items_label(d)}: {escape(_listed(d))}[/dim]"
        shapes = f"expected {d.expected}\ngot      {d.got}" if d.expected or d.got else ""
        table.add_row(
            f"[{style}]{shown(d.code)}\n{d.severity}[/{style}]",
            shown(d.stage),
            problem,
            shown(shapes),
            shown(d.hint),
        )
    console.print(table)
