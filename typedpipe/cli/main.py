"""`main`: parse, prepare the runtime, run the command, map every outcome to its exit
code; `launch`: the console script, which first re-executes a stepping command on
huge pages."""

import argparse
import contextlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from rich.markup import escape

from typedpipe import runtime
from typedpipe.cli import arguments
from typedpipe.cli.commands import COMMANDS, Command
from typedpipe.cli.exits import (
    EXIT_BUG,
    EXIT_INTERRUPTED,
    EXIT_INVALID,
    EXIT_NUMERIC,
    EXIT_USAGE,
    UsageError,
)
from typedpipe.cli.render import print_json, render_diagnostics, stderr
from typedpipe.contracts import ConfigError, ContractError, TrainingStopped

DESCRIPTION = "typed image-classification pipelines on JAX: check, train, evaluate, predict"


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("typedpipe")
    except PackageNotFoundError:
        return "unknown"


def parser() -> argparse.ArgumentParser:
    """The command line, one sub-parser per entry of the command table."""
    root = argparse.ArgumentParser(prog="typedpipe", description=DESCRIPTION)
    root.add_argument("--version", action="version", version=f"typedpipe {_version()}")
    subparsers = root.add_subparsers(dest="command", required=True)
    for command in COMMANDS.values():
        sub = subparsers.add_parser(command.name, help=command.help)
        if command.config != "none":
            optional = command.config == "optional"
            sub.add_argument(
                "config", nargs="?" if optional else None, help="pipeline config (TOML)"
            )
        if command.json:
            sub.add_argument("--json", action="store_true", help="print one JSON object on stdout")
        command.arguments(sub)
        if not command.json:
            sub.set_defaults(json=False)
    return root


def _settings(command: Command, args) -> runtime.Settings:
    """What `command` needs set before JAX starts, as its flags say."""
    cluster = arguments.cluster(args) if command.joins else None
    alone = cluster is None or cluster.coordinator is None  # it may have every core
    return runtime.Settings(
        steps=command.steps, every_core=command.every_core and alone, cluster=cluster
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command line; returns its exit code (DESIGN.md), never raises."""
    args = parser().parse_args(argv)
    args.stdout = sys.stdout
    command = COMMANDS[args.command]
    try:
        runtime.prepare(_settings(command, args))  # before the command touches JAX
        # --json promises stdout carries only the result: route stray prints to stderr,
        # Python's and those of native libraries (gloo, XLA) alike.
        with _stdout_to_stderr(args) if args.json else contextlib.nullcontext():
            return command.handler(args)
    except UsageError as err:
        stderr.print(f"[red]usage error[/red]: {escape(str(err))}")
        return EXIT_USAGE
    except (ContractError, ConfigError) as err:
        _emit_failure(err.diagnostics, args, command)
        return EXIT_INVALID
    except TrainingStopped as err:
        _emit_failure(err.diagnostics, args, command)
        return EXIT_NUMERIC
    except KeyboardInterrupt:
        # Training's own Ctrl-C (after a step) is `Interrupted`, handled by its command.
        before = f" {command.on_interrupt}" if command.on_interrupt else ""
        stderr.print(f"[yellow]interrupted[/yellow]{before}")
        return EXIT_INTERRUPTED
    except Exception:  # a bug: never a bare traceback, always its log
        log = _crash_log()
        stderr.print(
            f"[red]internal error[/red] (a typedpipe bug): {escape(_last_line())}; "
            f"the traceback is in {escape(str(log))}"
        )
        if args.json:
            print_json(args, {"ok": False, "crash_log": str(log), "diagnostics": []})
        return EXIT_BUG


def launch() -> int:
    """The `typedpipe` console script: a stepping command re-executes itself once on huge
    pages (`typedpipe.runtime`, step 0), then `main` runs."""
    runtime.release_held_interrupt()
    try:
        name = next((arg for arg in sys.argv[1:] if not arg.startswith("-")), None)
        command = COMMANDS.get(name or "")
        if command is not None and command.steps:
            runtime.relaunch_on_huge_pages()
        code = main()
    except KeyboardInterrupt:  # before main started: while Python imported it
        print("interrupted: nothing was trained or written", file=sys.stderr)
        code = EXIT_INTERRUPTED
    if code == EXIT_INTERRUPTED:
        # XLA may still be compiling on its own threads, and tearing the interpreter
        # down under them crashes it. Everything typedpipe writes is closed by now.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _emit_failure(diagnostics, args, command: Command) -> None:
    if args.json:
        print_json(args, {"ok": False, "diagnostics": [d.to_json() for d in diagnostics]})
    else:
        from rich.console import Console

        # check and summary print their findings on stdout, config faults included;
        # the other commands keep stdout for their results.
        render_diagnostics(diagnostics, Console() if command.findings else stderr)


@contextlib.contextmanager
def _stdout_to_stderr(args):
    """Send everything written to stdout to stderr; `args.stdout` keeps the real stdout."""
    try:
        fd = sys.stdout.fileno()
        sys.stdout.flush()
    except (AttributeError, OSError, ValueError):  # not a real file (a test's capture)
        with contextlib.redirect_stdout(sys.stderr):
            yield
        return
    saved = os.dup(fd)
    args.stdout = os.fdopen(os.dup(saved), "w")
    os.dup2(sys.stderr.fileno(), fd)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        args.stdout.flush()
        os.dup2(saved, fd)
        os.close(saved)


def _last_line() -> str:
    """The exception's type and the first line of its message."""
    error = sys.exc_info()[1]
    message = str(error).strip().splitlines()
    return f"{type(error).__name__}: {message[0]}" if message else type(error).__name__


def _crash_log() -> Path:
    """The current exception's traceback, in a file of its own under the temporary folder."""
    import tempfile
    import traceback

    handle, name = tempfile.mkstemp(prefix="typedpipe-crash-", suffix=".log")
    with open(handle, "w") as log:
        log.write(traceback.format_exc())
    return Path(name)
