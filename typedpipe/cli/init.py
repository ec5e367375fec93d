"""`typedpipe init`: survey an image folder and write a commented config for it."""

import shlex
from pathlib import Path

from rich.console import Console

from typedpipe.cli.exits import EXIT_INVALID, EXIT_OK, UsageError
from typedpipe.cli.progress import showing_progress
from typedpipe.cli.render import render_diagnostics
from typedpipe.contracts.diagnostics import visible


def cmd_init(args) -> int:
    """Write the config (never over a file), say what was found, and what to run next."""
    from typedpipe.files import write_atomic
    from typedpipe.pipeline.scaffold import plain_name, scaffold_config

    folder = Path(args.folder)
    if not folder.is_dir():
        raise UsageError(f"no such folder: {args.folder} (name a folder of class sub-folders)")
    if args.out is not None and not args.out.strip():
        raise UsageError("--out needs a file name")
    out = Path(args.out) if args.out else Path(f"{plain_name(folder)}.toml")
    if out.exists() or out.is_symlink():
        raise UsageError(
            f"{out} exists and init never overwrites a file: name another with --out CONFIG"
        )
    if not out.parent.is_dir():
        raise UsageError(f"no such folder for --out: {out.parent}")
    if args.weights is not None and not Path(args.weights).exists():
        raise UsageError(f"no such weights file: {args.weights} (name a .safetensors file)")
    with showing_progress(args, f"surveying {visible(str(folder))}"):
        scaffold = scaffold_config(folder, weights=args.weights)
    try:
        write_atomic(out, scaffold.text)
    except OSError as err:
        raise UsageError(f"cannot write {out}: {err.strerror}") from None
    print("\n".join(scaffold.found))
    print(f"wrote {visible(str(out))}")
    errors = [d for d in scaffold.diagnostics if d.is_error]
    if scaffold.diagnostics:
        print("check will report what no setting fixes:")
        render_diagnostics(scaffold.diagnostics, Console())
    config = shlex.quote(str(out))
    fix = "fix what is reported above, then\n      " if errors else ""
    print(f"next: {fix}typedpipe check {config}\n      typedpipe train {config}")
    return EXIT_INVALID if errors else EXIT_OK
