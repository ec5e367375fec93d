"""`typedpipe train`: check, then train, with a progress bar and one line per epoch."""

import os
from pathlib import Path

from rich.markup import escape

from typedpipe.cli.arguments import load
from typedpipe.cli.exits import EXIT_INTERRUPTED, EXIT_OK, UsageError
from typedpipe.cli.progress import PhaseBars, epoch_line, progress_bars
from typedpipe.cli.render import print_json, render_diagnostics, stderr


def warn_of_devices(devices: int | None) -> None:
    """Say so on stderr where `--devices` risks XLA's CPU collectives; the command goes on."""
    from typedpipe.pipeline.train.sharding import collectives_warning

    warning = collectives_warning(devices or 1)
    if warning is not None:
        render_diagnostics([warning], stderr)


def cmd_train(args) -> int:
    import jax

    from typedpipe import progress as phases
    from typedpipe.pipeline.run import train_run
    from typedpipe.pipeline.train.loop import Callback, Interrupted

    if args.out is not None and not args.out.strip():
        raise UsageError("--out needs a folder name")
    quiet = jax.process_index() != 0  # several processes: the first one reports
    if quiet:
        args.json, args.stdout = True, open(os.devnull, "w")  # noqa: SIM115
    config = load(args.config)
    warn_of_devices(args.devices)
    out = Path(args.out) if args.out else Path("runs") / config.name
    progress = progress_bars(args)
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
            print_json(
                args, {"ok": False, "interrupted": True, "step": stop.step, "diagnostics": []}
            )
        return EXIT_INTERRUPTED
    if args.json:
        print_json(args, {"ok": True, "out": str(out), "metrics": metrics})
    else:
        accuracy, speed = metrics["test_accuracy"], metrics["images_per_second"]
        stderr.print(
            "[green]done[/green]: "
            + (f"test accuracy {accuracy:.4f}, " if accuracy is not None else "no test split, ")
            + (f"{speed:.0f} images/s " if speed is not None else "")
            + f"on {metrics['backend']}; run folder {escape(str(out))}"
        )
    return EXIT_OK
