"""A training run end to end: check, read, train, evaluate, and the run folder.

Run folder (`runs/<name>` by default): config.toml (resolved), fingerprint.json,
metrics.json, history.jsonl, checkpoints/ (Orbax), model/ (the exported bundle),
report.png. Every file is written atomically; the folder is locked while a run
uses it; a re-train replaces a finished run only once it has finished itself
(see `runfolder`).
"""

import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import jax

from typedpipe.contracts import ContractError
from typedpipe.files import write_atomic
from typedpipe.pipeline.check import check_pipeline, errors
from typedpipe.pipeline.config import Config
from typedpipe.pipeline.runfolder import (
    FollowerFolder,
    RunFolder,
    check_resume,
    fingerprint,
    io_error,
    no_checkpoint,
    open_run_folder,
    write_fingerprint,
)
from typedpipe.pipeline.sources import RecordSource, Splits, Survey, split_indices
from typedpipe.pipeline.train.callbacks import Checkpointing, History, NumericGuard
from typedpipe.pipeline.train.checkpoint import Checkpoints
from typedpipe.pipeline.train.loop import Callback, evaluate, fit
from typedpipe.pipeline.train.sharding import Placement, default_devices
from typedpipe.pipeline.train.state import TrainState
from typedpipe.pipeline.train.step import Train, make_train

#: The keys of metrics.json; an unfinished run has them all, null but for the time and steps.
METRICS = (
    "test_accuracy",
    "val_accuracy",
    "test_loss",
    "train_seconds",
    "images_per_second",
    "steps",
    "skipped_steps",
    "epochs",
    "devices",
    "processes",
    "backend",
    "device_kind",
)


def train_run(
    config: Config,
    out: Path,
    *,
    epochs: int | None = None,
    max_steps: int | None = None,
    resume: bool = False,
    devices: int | None = None,
    callbacks: Sequence[Callback] = (),
    on_phase: Callable[[str], None] = lambda what: None,
) -> dict:
    """Check, then train `config`, writing the run folder to `out`.

    Args:
        config: the pipeline.
        out: the run folder.
        epochs: overrides `[train] epochs`.
        max_steps: stop once the run has taken this many steps (a checkpoint is written).
        resume: continue from the newest checkpoint in `out`, exactly where it stopped.
        devices: data-parallel devices (default: `default_devices`: every device of
            several processes, one otherwise).
        callbacks: your own, run after typedpipe's (progress bars, early stopping).
        on_phase: told what the run is doing before training starts.

    Returns:
        The metrics written to `out/metrics.json` (None where a value does not exist).

    Raises:
        ContractError / ConfigError: the check found errors; nothing was written.
        RunFolderError: the folder is locked, not writable, full, or holds a
            checkpoint of another config (`--resume`).
        TrainingStopped: the numeric guard ended training.
        Interrupted: Ctrl-C; the checkpoint of the last whole step is kept.
    """
    if epochs is not None:
        config = dataclasses.replace(config, train=dataclasses.replace(config.train, epochs=epochs))
    placement = Placement(devices=devices or default_devices())
    on_phase("checking the pipeline and its data")
    source = config.source()
    survey = source.survey()
    found = errors(check_pipeline(config, survey, devices=placement.num_devices))
    if found:
        raise ContractError(found)
    on_phase("opening the data")
    records = source.records(survey)
    data = config.data
    splits = split_indices(survey.class_ids, data.val_fraction, data.test_fraction, config.seed)
    batch_size = config.train.batch_size
    steps_per_epoch = len(splits.train) // batch_size
    train = make_train(config, survey.label_spec.format, steps_per_epoch)
    key = jax.random.key(config.seed)
    initial = None  # random weights; a resumed run restores its own
    if config.model.weights is not None and not resume:
        on_phase(f"reading the weights of {config.model.weights}")
        initial = train.initial_weights()
    state = jax.jit(train.init_state, out_shardings=placement.replicated)(key, initial)

    run = Run(config, train, key, records, survey, splits, placement)
    folder = open_run_folder(out, resume=resume)
    try:
        folder.require_space(_checkpoint_bytes(state))
        return _train_in(
            folder,
            run,
            state,
            resume=resume,
            max_steps=max_steps,
            callbacks=callbacks,
            on_phase=on_phase,
        )
    except OSError as err:
        raise io_error(folder.work, err, "write") from None
    finally:
        folder.close()


def _checkpoint_bytes(state) -> int:
    """Room the run folder needs: two checkpoints of the state and the exported weights."""
    return 3 * sum(leaf.nbytes for leaf in jax.tree.leaves(state) if hasattr(leaf, "nbytes"))


@dataclasses.dataclass(frozen=True)
class Run:
    """What a checked run trains on: the config, its functions, its data and devices."""

    config: Config
    train: Train
    key: jax.Array
    records: RecordSource
    survey: Survey
    splits: Splits
    placement: Placement


def _train_in(
    folder: RunFolder | FollowerFolder,
    run: Run,
    state: TrainState,
    *,
    resume: bool,
    max_steps: int | None,
    callbacks: Sequence[Callback],
    on_phase: Callable[[str], None],
) -> dict:
    config, train, key, records = run.config, run.train, run.key, run.records
    survey, splits, placement = run.survey, run.splits, run.placement
    work = folder.work
    primary = isinstance(folder, RunFolder)  # of several processes, only the first writes
    current = fingerprint(config, survey.label_spec.format, len(records))
    history_path, metrics_path = work / "history.jsonl", work / "metrics.json"
    checkpoints = Checkpoints(work / "checkpoints")
    history, seconds_before = [], 0.0
    try:
        if resume:
            latest = checkpoints.latest_step()
            if latest is None:
                raise no_checkpoint(folder.out)
            check_resume(work, current)
            on_phase(f"restoring step {latest}")
            state = checkpoints.restore(latest, like=state)
            done_epochs = latest // max(len(splits.train) // config.train.batch_size, 1)
            if history_path.exists():
                lines = [json.loads(line) for line in history_path.read_text().splitlines() if line]
                history = [h for h in lines if h["epoch"] <= done_epochs]
            if metrics_path.exists():
                seconds_before = json.loads(metrics_path.read_text()).get("train_seconds") or 0.0
        if primary:
            write_fingerprint(work, current)
            write_atomic(work / "config.toml", config.to_toml())
        record = History(history_path if primary else None, history)
        guard = NumericGuard(
            train,
            max_consecutive=config.train.max_consecutive_skips,
            stop_at_first=config.train.on_nonfinite == "stop",
        )
        on_phase("compiling the step")
        started = time.perf_counter()
        try:
            state, throughput = fit(
                train,
                state,
                records,
                splits,
                batch_size=config.train.batch_size,
                epochs=config.train.epochs,
                seed=config.seed,
                key=key,
                placement=placement,
                callbacks=[guard, record, Checkpointing(checkpoints), *callbacks],
                max_steps=max_steps,
            )
        finally:
            # The seconds so far count even when training ends early: a resume adds to them.
            seconds = round(seconds_before + time.perf_counter() - started, 3)
            checkpoints.close()
            unfinished = dict.fromkeys(METRICS) | {
                "train_seconds": seconds,
                "steps": checkpoints.saved_step,
            }
            if primary:
                write_atomic(metrics_path, json.dumps(unfinished, indent=2) + "\n")
    except BaseException:
        checkpoints.close()
        raise

    batch_size = config.train.batch_size
    test = evaluate(train, state, records, splits.test, batch_size, placement)
    val = evaluate(train, state, records, splits.val, batch_size, placement)
    metrics = {
        "test_accuracy": test["accuracy"],
        "val_accuracy": val["accuracy"],
        "test_loss": test["loss"],
        "train_seconds": seconds,
        "images_per_second": throughput.images_per_second,
        "steps": int(state.step),
        "skipped_steps": int(state.skipped),
        "epochs": len(record.lines),
        "devices": placement.num_devices,
        "processes": jax.process_count(),
        "backend": jax.default_backend(),
        "device_kind": jax.devices()[0].device_kind,
    }

    from typedpipe.pipeline.export import export_model
    from typedpipe.pipeline.report import write_report

    if survey.spec is not None:  # a clean check always has a spec
        export_model(
            work / "model", config, state.params, state.rest, survey.spec, survey.class_names
        )
    if not primary:
        return metrics
    write_report(
        work / "report.png",
        record.lines,
        survey.class_ids[splits.test],
        test["predictions"],
        survey.class_names,
        f"{config.name}: {config.model.name} on {config.data.source}",
    )
    # metrics.json last: a folder whose metrics say `steps` is a finished run.
    write_atomic(metrics_path, json.dumps(metrics, indent=2, allow_nan=False) + "\n")
    folder.publish()
    return metrics
