"""Progress on stderr: live bars on a terminal, one line per long phase in logs, never stdout."""

import contextlib
import time

from rich.markup import escape

from typedpipe.cli.render import stderr
from typedpipe.contracts.diagnostics import visible


def progress_bars(args):
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
def showing_progress(args, what: str):
    """Around a command: its long phases as bars (or lines) on stderr, and `what` it does."""
    from typedpipe import progress as phases

    with progress_bars(args) as bars:
        listener = PhaseBars(bars)
        listener.begin(what, bars.add_task(what, total=None, status=""))
        with phases.listening(listener):
            yield
        listener.end()


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
