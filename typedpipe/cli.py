"""The `typedpipe` command: check, summary, train, eval, predict, bench, init, doctor.

Exit codes: 0 ok; 1 the pipeline or data is invalid (diagnostics printed);
2 usage error (no such file, bad flag); 3 training stopped by the numeric guard;
4 a typedpipe bug (one line on stderr, the traceback in a crash log); 130 interrupted.
With `--json`, stdout carries one JSON object and nothing else.
"""

import argparse
import contextlib
import importlib.resources
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from typedpipe.contracts import ConfigError, ContractError, Diagnostic, TrainingStopped
from typedpipe.contracts.diagnostics import visible
from typedpipe.launch import STEPPING

EXIT_OK, EXIT_INVALID, EXIT_USAGE, EXIT_NUMERIC, EXIT_BUG, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 130

# soft_wrap: a message keeps its lines whole, so logs and tests can grep it.
stderr = Console(stderr=True, soft_wrap=True)

# Offending files or indices listed in the table; --json carries up to MAX_ITEMS.
_ITEMS_SHOWN = 5
# Plain output: the severity column, and the indent of a block's other lines.
_INDENT = 8
# Narrower than this, the table's text columns shrink to a word each: plain text reads better.
_TABLE_MIN_WIDTH = 72


def default_config_path() -> Path:
    """The built-in default, `examples/digits.toml`, shipped inside the package."""
    packaged = importlib.resources.files("typedpipe") / "examples" / "digits.toml"
    if packaged.is_file():
        return Path(str(packaged))
    return Path(__file__).resolve().parent.parent / "examples" / "digits.toml"


class UsageError(Exception):
    """A bad command line: exit 2."""


def _load(path: str | None, *, draft: bool = False):
    from typedpipe.pipeline.config import load_config, load_draft

    if path is not None and not path.strip():
        raise UsageError(
            "the config path is empty: name a .toml file, or leave it out for the default"
        )
    config_path = Path(path) if path is not None else default_config_path()
    if not config_path.is_file():
        raise UsageError(f"no such config file: {config_path}")
    return load_draft(config_path) if draft else load_config(config_path)


def _shown(text: str, *, newlines: bool = True) -> str:
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
    shown = [visible(item) for item in d.items[:_ITEMS_SHOWN]]
    more = max(d.total_items, len(d.items)) - len(shown)
    return ", ".join(shown) + (f", ... {more:,} more" if more else "")


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


def _tabular(console: Console) -> bool:
    """A rich table only on a colour terminal wide enough for one; pipes, NO_COLOR,
    TERM=dumb and narrow windows get plain text."""
    return (
        console.is_terminal
        and not console.is_dumb_terminal
        and not console.no_color
        and console.width >= _TABLE_MIN_WIDTH
    )


def render_diagnostics(diagnostics: Sequence[Diagnostic], console: Console) -> None:
    """A table on a terminal, plain aligned blocks anywhere else (see `plain_diagnostics`)."""
    if not _tabular(console):
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
        problem = _shown(d.message)
        if d.items:
            problem += f"\n[dim]{_items_label(d)}: {escape(_listed(d))}[/dim]"
        shapes = f"expected {d.expected}\ngot      {d.got}" if d.expected or d.got else ""
        table.add_row(
            f"[{style}]{_shown(d.code)}\n{d.severity}[/{style}]",
            _shown(d.stage),
            problem,
            _shown(shapes),
            _shown(d.hint),
        )
    console.print(table)


def _emit_failure(diagnostics: Sequence[Diagnostic], args) -> None:
    if args.json:
        _print_json(args, {"ok": False, "diagnostics": [d.to_json() for d in diagnostics]})
    else:
        # check and summary print their findings on stdout, config faults included;
        # the other commands keep stdout for their results.
        findings = getattr(args, "command", None) in ("check", "summary")
        render_diagnostics(diagnostics, Console() if findings else stderr)


def _print_json(args, result: dict) -> None:
    print(json.dumps(result), file=args.stdout)


def _progress_bars(args):
    """A rich Progress on stderr: live on a terminal; off under --json and in logs
    (where `PhaseBars` and the epoch lines say what happened instead)."""
    from rich.progress import BarColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
    from rich.text import Text

    class Count(ProgressColumn):
        """`done/total`, or nothing for a task of unknown length."""

        def render(self, task) -> Text:
            if task.total is None:
                return Text("")
            return Text(f"{int(task.completed):,}/{int(task.total):,}", style="progress.download")

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        Count(),
        TextColumn("{task.fields[status]}"),
        TimeRemainingColumn(),
        console=stderr,
        transient=True,
        disable=args.json or not stderr.is_interactive,
    )


class PhaseBars:
    """The CLI's `typedpipe.progress` listener: a bar for every tracked phase past a second.

    A phase that ends after more than a second also leaves one line ("check files:
    10,000 in 3.2 s") on stderr, so a log shows where the time went. Never stdout.
    Steps that are no loop (checking, compiling) are timed with `begin` and `end`.
    """

    def __init__(self, progress, after_seconds: float = 1.0):
        self.progress = progress
        self.after_seconds = after_seconds
        self.running: dict[str, tuple[float, object]] = {}  # phase -> (start, task id or None)
        self.step: tuple[str, float] | None = None

    def begin(self, what: str, task=None) -> None:
        """A step begins and the one before ends; `task`'s status, if given, names it."""
        self.end()
        self.step = (what, time.monotonic())
        if task is not None:
            self.progress.update(task, status=what)

    def end(self) -> None:
        """The current step ends: one line if it took more than a second."""
        if self.step is not None:
            what, start = self.step
            self.step = None
            self._took(visible(what), time.monotonic() - start)

    def _took(self, what: str, seconds: float) -> None:
        if seconds >= self.after_seconds:
            self.progress.console.print(f"{escape(what)} in {seconds:.1f} s", highlight=False)

    def __call__(self, phase: str, done: int, total: int | None) -> None:
        now = time.monotonic()
        if done == 0 and phase not in self.running:
            self.running[phase] = (now, None)
            return
        if phase not in self.running:  # a repeated end call
            return
        start, task = self.running[phase]
        if task is None and now - start >= self.after_seconds:
            task = self.progress.add_task(visible(phase), total=total, status="")
            self.running[phase] = (start, task)
        if task is not None:
            self.progress.update(task, completed=done, total=total)
        if total is not None and done >= total:
            del self.running[phase]
            if task is not None:
                self.progress.remove_task(task)
            self._took(f"{visible(phase)}: {done:,}", now - start)


@contextlib.contextmanager
def _showing_progress(args, what: str):
    """Around a command: its long phases as bars (or lines) on stderr, and `what` it does."""
    from typedpipe import progress as phases

    with _progress_bars(args) as bars:
        listener = PhaseBars(bars)
        listener.begin(what, bars.add_task(what, total=None, status=""))
        with phases.listening(listener):
            yield
        listener.end()


def cmd_check(args) -> int:
    from typedpipe.pipeline.check import check_draft, errors

    draft = _load(args.config, draft=True)  # config faults do not hide the data's
    with _showing_progress(args, "checking the pipeline and its data"):
        diagnostics = check_draft(draft)
    ok = not errors(diagnostics)
    if args.json:
        _print_json(args, {"ok": ok, "diagnostics": [d.to_json() for d in diagnostics]})
        return EXIT_OK if ok else EXIT_INVALID
    console = Console()
    if diagnostics:
        render_diagnostics(diagnostics, console)
    if ok:
        path = visible(str(args.config or default_config_path()))
        warned = f", with {counted(diagnostics)}" if diagnostics else ""
        ok_line = f"ok: {path} passes every check{warned}"
        if _tabular(console):
            console.print(f"[green]ok[/green]{escape(ok_line[2:])}")
        else:
            print(ok_line, file=console.file)
    return EXIT_OK if ok else EXIT_INVALID


def cmd_summary(args) -> int:
    from typedpipe.pipeline.check.summary import summarize

    config = _load(args.config)
    m = config.model
    rows = summarize(config)
    total_params = sum(r.params for r in rows)
    total_flops = sum(r.flops for r in rows)
    if args.json:
        _print_json(
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
            _shown(r.name),
            _shown(r.kind),
            _shown(r.output),
            f"{r.params:,}" if r.params else "",
            f"{r.flops:,}" if r.flops else "",
        )
    table.add_section()
    table.add_row("total", "", "", f"{total_params:,}", f"{total_flops:,} per image")
    Console().print(table)
    return EXIT_OK


def _warn_of_devices(devices: int | None) -> None:
    """Say so on stderr where `--devices` risks XLA's CPU collectives; the command goes on."""
    from typedpipe.pipeline.train.sharding import collectives_warning

    warning = collectives_warning(devices or 1)
    if warning is not None:
        render_diagnostics([warning], stderr)


def cmd_train(args) -> int:
    from typedpipe import progress as phases
    from typedpipe.pipeline.run import train_run
    from typedpipe.pipeline.train.loop import Callback

    if args.out is not None and not args.out.strip():
        raise UsageError("--out needs a folder name")
    _join(args)
    import jax

    quiet = jax.process_index() != 0  # several processes: the first one reports
    if quiet:
        args.json, args.stdout = True, open(os.devnull, "w")  # noqa: SIM115
    config = _load(args.config)
    _warn_of_devices(args.devices)
    out = Path(args.out) if args.out else Path("runs") / config.name
    progress = _progress_bars(args)
    task = progress.add_task(f"train {config.name}", total=None, status="")
    listener = PhaseBars(progress)  # tracked loops, and the steps before training

    class ShowProgress(Callback):
        """The progress bar (a batch's loss every 10 steps) and one line per epoch (the
        epoch's mean train loss and accuracy, then val).

        Step s's loss is read after step s + 1 is queued, as the guard reads its
        counters: reading the newest step's would idle the devices while the host
        waits for it.
        """

        shown: dict | None = None  # the metrics of the step to show next

        def on_train_start(self, loop) -> None:
            listener.end()
            progress.update(task, total=loop.total_steps, completed=loop.step, status="")

        def on_step_end(self, loop, batch, metrics) -> None:
            if self.shown is not None:
                self.show(loop, self.shown)
                self.shown = None
            if loop.step == loop.total_steps:
                self.show(loop, metrics)
            elif loop.step % 10 == 0:
                self.shown = metrics

        def show(self, loop, metrics) -> None:
            status = f"last batch loss {float(metrics['loss']):.4f}"
            progress.update(task, completed=loop.step, status=status)

        def on_epoch_end(self, loop, stats) -> None:
            epochs = -(-loop.total_steps // max(loop.steps_per_epoch, 1))
            progress.console.print(epoch_line(stats, epochs), highlight=False)

    from typedpipe.pipeline.train.loop import Interrupted

    try:
        with progress, phases.listening(listener):
            metrics = train_run(
                config,
                out,
                epochs=args.epochs,
                max_steps=args.max_steps,
                resume=args.resume,
                devices=args.devices,
                callbacks=[] if quiet else [ShowProgress()],
                on_phase=lambda what: listener.begin(what, task),
            )
    except Interrupted as stop:
        resume = f"typedpipe train {args.config or ''} --out {out} --resume".replace("  ", " ")
        stderr.print(
            f"[yellow]interrupted[/yellow] after step {stop.step}: its checkpoint is kept; "
            f"continue with: {escape(resume)}"
        )
        if args.json:
            _print_json(
                args, {"ok": False, "interrupted": True, "step": stop.step, "diagnostics": []}
            )
        return EXIT_INTERRUPTED
    if args.json:
        _print_json(args, {"ok": True, "out": str(out), "metrics": metrics})
    else:
        accuracy, speed = metrics["test_accuracy"], metrics["images_per_second"]
        stderr.print(
            "[green]done[/green]: "
            + (f"test accuracy {accuracy:.4f}, " if accuracy is not None else "no test split, ")
            + (f"{speed:.0f} images/s " if speed is not None else "")
            + f"on {metrics['backend']}; run folder {escape(str(out))}"
        )
    return EXIT_OK


def epoch_line(stats, epochs: int) -> str:
    """One epoch in words: `epoch 3/15  train loss 0.1234 acc 0.970 (epoch mean)  val ...`."""

    def number(value, spec: str) -> str:
        # Four significant digits (a loss of 0.0004 keeps them), padded so columns line up.
        return ("-" if value is None else f"{value:{spec}}").ljust(8 if "g" in spec else 5)

    width = len(str(epochs))
    return (
        f"epoch {stats.epoch:>{width}}/{epochs}  "
        f"train loss {number(stats.train_loss, '.4g')} acc {number(stats.train_accuracy, '.3f')} "
        "(epoch mean)  "
        f"val loss {number(stats.val_loss, '.4g')} acc {number(stats.val_accuracy, '.3f')} "
        f"{stats.seconds:5.1f} s"
        + (f"  skipped {stats.skipped_steps} steps" if stats.skipped_steps else "")
    )


def _bundle(run_dir: str):
    from typedpipe.pipeline.export import ExportedModel

    bundle = Path(run_dir) / "model"
    if not (bundle / "contract.json").is_file():
        raise UsageError(
            f"{run_dir} has no exported model ({bundle}/contract.json): pass a "
            "run folder written by typedpipe train"
        )
    return ExportedModel(bundle)  # a bundle of another version or a changed file: exit 1


def _run_test_split(model):
    """The images and class ids of the test split the run was trained with."""
    from typedpipe.pipeline.sources import read_batch, split_indices

    config = model.config
    source = config.source()
    survey = source.survey()
    records = source.records(survey)
    # The same split as training made: same fractions, same seed.
    data = config.data
    indices = split_indices(
        survey.class_ids, data.val_fraction, data.test_fraction, config.seed
    ).test
    split = "test"
    if not len(indices):  # test_fraction = 0: evaluate on everything, and say so
        indices, split = np.arange(len(records)), "all"
    images, _ = read_batch(records, indices)
    return images, survey.class_ids[indices], split


def _other_data(model, config_path: str):
    """Every image of the source another config names, once it meets the model's contract."""
    from typedpipe.pipeline.sources import read_batch

    source = _load(config_path).source()
    survey = source.survey()
    if survey.errors:
        raise ContractError(survey.errors)
    if survey.spec is not None:
        model.check_spec(survey.spec)  # before a pixel is read
    class_ids = model.class_ids(survey.class_ids, survey.class_names)
    records = source.records(survey)
    images, _ = read_batch(records, np.arange(len(records)))
    return images, class_ids, "all"


def cmd_eval(args) -> int:
    model = _bundle(args.run_dir)
    with _showing_progress(args, "evaluating"):
        if args.data:
            images, class_ids, split = _other_data(model, args.data)
        else:
            images, class_ids, split = _run_test_split(model)
        result = model.evaluate(images, class_ids)
    if args.json:
        _print_json(args, {"ok": True, "data": args.data, "split": split, **result})
    else:
        where = f" on {args.data}" if args.data else ""
        Console().print(
            f"{escape(args.run_dir)}{escape(where)}: {split} accuracy "
            f"{result['accuracy']:.4f}, loss {result['loss']:.4f} on {result['images']} images"
            if result["images"]
            else f"{escape(args.run_dir)}: no images to evaluate"
        )
    return EXIT_OK


def cmd_predict(args) -> int:
    missing = [p for p in args.images if not Path(p).exists()]
    if missing:
        raise UsageError(f"no such image file or folder: {', '.join(missing)}")
    model = _bundle(args.run_dir)
    with _showing_progress(args, "predicting"):
        predictions, faults = model.predict_files(args.images)
    ok = not faults
    if args.json:
        _print_json(
            args,
            {
                "ok": ok,
                "predictions": [p.to_json() for p in predictions],
                "diagnostics": [d.to_json() for d in faults],
            },
        )
        return EXIT_OK if ok else EXIT_INVALID
    if predictions:
        table = Table(title=f"predictions of {_shown(args.run_dir, newlines=False)}")
        for column in ("file", "class", "probability", "runners-up"):
            table.add_column(column)
        for p in predictions:
            others = ", ".join(
                f"{visible(name)} {probability:.3f}" for _, name, probability in p.top[1:]
            )
            table.add_row(
                _shown(p.file, newlines=False),
                _shown(p.name, newlines=False),
                f"{p.probability:.3f}",
                escape(others),
            )
        Console().print(table)
    if faults:
        render_diagnostics(faults, stderr)
    return EXIT_OK if ok else EXIT_INVALID


def cmd_bench(args) -> int:
    from typedpipe.pipeline.bench import bench_step
    from typedpipe.pipeline.train.sharding import use_every_cpu_core

    use_every_cpu_core()
    config = _load(args.config)
    _warn_of_devices(args.devices)
    result = bench_step(config, steps=args.steps, devices=args.devices)
    if args.json:
        _print_json(args, {"ok": True, **result})
        return EXIT_OK
    table = Table(title=f"train step: {result['model']} on {result['device_kind']}")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for key, value in result.items():
        table.add_row(key, escape(str(value)))
    Console().print(table)
    return EXIT_OK


def cmd_init(args) -> int:
    """Survey an image folder and write a commented config for it (never over a file)."""
    import shlex

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
    with _showing_progress(args, f"surveying {visible(str(folder))}"):
        scaffold = scaffold_config(folder)
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


def cmd_doctor(args) -> int:
    import jax

    info = {
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
    }
    if args.json:
        _print_json(args, info)
    else:
        print("\n".join(f"{k}: {v}" for k, v in info.items()))
    return EXIT_OK


def _address(text: str) -> str:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT (e.g. 10.0.0.1:1234)")
    return text


def _join(args) -> None:
    """Join the run's other processes, as the flags say or as the cluster says."""
    flags = (args.coordinator, args.num_processes, args.process_id)
    if any(f is not None for f in flags) and not all(f is not None for f in flags):
        raise UsageError("--coordinator, --num-processes and --process-id go together")
    if args.process_id is not None and args.process_id >= args.num_processes:
        raise UsageError(f"--process-id {args.process_id} must be below --num-processes")
    from typedpipe.pipeline.train.sharding import join_cluster, use_every_cpu_core

    if args.coordinator is None:  # one process on this machine: it may have every core
        use_every_cpu_core()
    join_cluster(*flags)


def _int_from(minimum: int):
    """An argparse type: an integer of at least `minimum`."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} must be at least {minimum}")
        return value

    return parse


_positive_int = _int_from(1)
_non_negative_int = _int_from(0)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("typedpipe")
    except PackageNotFoundError:
        return "unknown"


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="typedpipe", description=__doc__.splitlines()[0])
    root.add_argument("--version", action="version", version=f"typedpipe {_version()}")
    commands = root.add_subparsers(dest="command", required=True)

    def command(name: str, handler, help_text: str, config_optional: bool = False):
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument(
            "config", nargs="?" if config_optional else None, help="pipeline config (TOML)"
        )
        sub.add_argument("--json", action="store_true", help="print one JSON object on stdout")
        sub.set_defaults(handler=handler)
        return sub

    command("check", cmd_check, "validate the pipeline and its data before any step")
    command("summary", cmd_summary, "shape flow, parameters and FLOPs of every stage and layer")
    train = command(
        "train",
        cmd_train,
        "check, then train (default: examples/digits.toml)",
        config_optional=True,
    )
    train.add_argument("--out", help="run folder (default runs/<name>)")
    train.add_argument("--epochs", type=_positive_int)
    train.add_argument("--max-steps", type=_positive_int)
    train.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    train.add_argument("--devices", type=_positive_int, help="data-parallel device count")
    train.add_argument(
        "--coordinator",
        metavar="HOST:PORT",
        type=_address,
        help="process 0's address (several processes)",
    )
    train.add_argument("--num-processes", type=_positive_int, help="processes in the run")
    train.add_argument("--process-id", type=_non_negative_int, help="this process's index")
    for name, handler, help_text in (
        ("eval", cmd_eval, "accuracy of a run's exported model on its test split, or other data"),
        ("predict", cmd_predict, "classify image files with a run's exported model"),
    ):
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("run_dir", help="a run folder written by typedpipe train")
        sub.add_argument("--json", action="store_true", help="print one JSON object on stdout")
        sub.set_defaults(handler=handler)
        if name == "eval":
            sub.add_argument(
                "--data",
                metavar="CONFIG",
                help="evaluate on every image of the source this config's [data] names",
            )
        if name == "predict":
            sub.add_argument(
                "images",
                nargs="+",
                metavar="IMAGE_OR_FOLDER",
                help="image files, or folders (every image file under them, sorted)",
            )
    bench = command(
        "bench", cmd_bench, "compile time, speed and memory of the train step", config_optional=True
    )
    bench.add_argument("--steps", type=_positive_int, default=50)
    bench.add_argument("--devices", type=_positive_int, help="data-parallel device count")
    init = commands.add_parser(
        "init", help="survey an image folder and write a config that passes check"
    )
    init.add_argument("folder", help="a folder with one sub-folder of images per class")
    init.add_argument("--out", metavar="CONFIG", help="the config to write (default <folder>.toml)")
    init.set_defaults(handler=cmd_init, json=False)
    doctor = commands.add_parser("doctor", help="what JAX sees on this machine")
    doctor.add_argument("--json", action="store_true")
    doctor.set_defaults(handler=cmd_doctor)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    args.stdout = sys.stdout
    if args.command in STEPPING:  # before JAX starts a backend, when XLA reads XLA_FLAGS
        from typedpipe.models.layers.lowering import use_xla_cpu_convolutions

        use_xla_cpu_convolutions()
    try:
        # --json promises stdout carries only the result: route stray prints to stderr,
        # Python's and those of native libraries (gloo, XLA) alike.
        with _stdout_to_stderr(args) if args.json else contextlib.nullcontext():
            return args.handler(args)
    except UsageError as err:
        stderr.print(f"[red]usage error[/red]: {escape(str(err))}")
        return EXIT_USAGE
    except (ContractError, ConfigError) as err:
        _emit_failure(err.diagnostics, args)
        return EXIT_INVALID
    except TrainingStopped as err:
        _emit_failure(err.diagnostics, args)
        return EXIT_NUMERIC
    except KeyboardInterrupt:
        # Training's own Ctrl-C (after a step) is `Interrupted`, handled by cmd_train.
        before = " before the first step: nothing was trained" if args.handler is cmd_train else ""
        stderr.print(f"[yellow]interrupted[/yellow]{before}")
        return EXIT_INTERRUPTED
    except Exception:  # a bug: never a bare traceback, always its log
        log = _crash_log()
        stderr.print(
            f"[red]internal error[/red] (a typedpipe bug): {escape(_last_line())}; "
            f"the traceback is in {escape(str(log))}"
        )
        if args.json:
            _print_json(args, {"ok": False, "crash_log": str(log), "diagnostics": []})
        return EXIT_BUG


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


if __name__ == "__main__":
    sys.exit(main())
