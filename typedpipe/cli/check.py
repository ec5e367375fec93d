"""`typedpipe check` and `typedpipe summary`: what a pipeline is, before any step."""

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from typedpipe.cli.arguments import load
from typedpipe.cli.exits import EXIT_INVALID, EXIT_OK
from typedpipe.cli.progress import showing_progress
from typedpipe.cli.render import counted, print_json, render_diagnostics, shown, tabular
from typedpipe.contracts.diagnostics import visible


def cmd_check(args) -> int:
    from typedpipe.pipeline.check import check_draft, errors
    from typedpipe.pipeline.config import default_config_path

    draft = load(args.config, draft=True)  # config faults do not hide the data's
    with showing_progress(args, "checking the pipeline and its data"):
        diagnostics = check_draft(draft)
    ok = not errors(diagnostics)
    if args.json:
        print_json(args, {"ok": ok, "diagnostics": [d.to_json() for d in diagnostics]})
        return EXIT_OK if ok else EXIT_INVALID
    console = Console()
    if diagnostics:
        render_diagnostics(diagnostics, console)
    if ok:
        path = visible(str(args.config or default_config_path()))
        warned = f", with {counted(diagnostics)}" if diagnostics else ""
        ok_line = f"ok: {path} passes every check{warned}"
        if tabular(console):
            console.print(f"[green]ok[/green]{escape(ok_line[2:])}")
        else:
            print(ok_line, file=console.file)
    return EXIT_OK if ok else EXIT_INVALID


def cmd_summary(args) -> int:
    from typedpipe.pipeline.check.summary import summarize

    config = load(args.config)
    m = config.model
    rows = summarize(config)
    total_params = sum(r.params for r in rows)
    total_flops = sum(r.flops for r in rows)
    if args.json:
        print_json(
            args,
            {
                "ok": True,
                "rows": [r.to_json() for r in rows],
                "params": total_params,
                "flops": total_flops,
            },
        )
        return EXIT_OK
    table = Table(title=f"{config.name}: {m.name}, input {'x'.join(map(str, m.input))}")
    for column in ("stage / layer", "type", "output", "params", "FLOPs"):
        table.add_column(column, justify="right" if column in ("params", "FLOPs") else "left")
    for r in rows:
        table.add_row(
            shown(r.name),
            shown(r.kind),
            shown(r.output),
            f"{r.params:,}" if r.params else "",
            f"{r.flops:,}" if r.flops else "",
        )
    table.add_section()
    table.add_row("total", "", "", f"{total_params:,}", f"{total_flops:,} per image")
    Console().print(table)
    return EXIT_OK
