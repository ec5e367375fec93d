"""A training run end to end: check, read, train, evaluate, and the run folder.

Run folder (`runs/<name>` by default): config.toml (resolved), metrics.json,
history.jsonl, checkpoints/ (Orbax), model/ (the exported bundle), report.png.
Only process 0 writes it.
"""

import dataclasses
import json
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import jax

from typedpipe.contracts import ContractError
from typedpipe.pipeline.check import check_pipeline, errors
from typedpipe.pipeline.config import Config
from typedpipe.pipeline.sources import split_indices
from typedpipe.pipeline.train.callbacks import Checkpointing, History, NumericGuard, write_atomic
from typedpipe.pipeline.train.checkpoint import Checkpoints
from typedpipe.pipeline.train.loop import Callback, evaluate, fit
from typedpipe.pipeline.train.sharding import Placement
from typedpipe.pipeline.train.step import make_train


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
        devices: data-parallel devices (default 1).
        callbacks: your own, run after typedpipe's (progress bars, early stopping).
        on_phase: told what the run is doing before training starts.

    Returns:
        The metrics written to `out/metrics.json` (None where a value does not exist).

    Raises:
        ContractError / ConfigError: the check found errors; nothing was written.
        TrainingStopped: the numeric guard ended training.
    """
    if epochs is not None:
        config = dataclasses.replace(config, train=dataclasses.replace(config.train, epochs=epochs))
    placement = Placement(devices=devices if devices is not None else 1)
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
    state = jax.jit(train.init_state)(key)

    out.mkdir(parents=True, exist_ok=True)
    checkpoints_dir = out / "checkpoints"
    if not resume and checkpoints_dir.exists():
        shutil.rmtree(checkpoints_dir)
    checkpoints = Checkpoints(checkpoints_dir)
    history_path, metrics_path = out / "history.jsonl", out / "metrics.json"
    history, seconds_before = [], 0.0
    latest = checkpoints.latest_step() if resume else None
    if latest is not None:
        on_phase(f"restoring step {latest}")
        state = checkpoints.restore(latest, like=state)
        done_epochs = latest // max(steps_per_epoch, 1)
        if history_path.exists():
            lines = [json.loads(line) for line in history_path.read_text().splitlines() if line]
            history = [h for h in lines if h["epoch"] <= done_epochs]
        if metrics_path.exists():
            seconds_before = json.loads(metrics_path.read_text()).get("train_seconds") or 0.0
    write_atomic(out / "config.toml", config.to_toml())

    record = History(history_path, history)
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
            batch_size=batch_size,
            epochs=config.train.epochs,
            seed=config.seed,
            key=key,
            placement=placement,
            callbacks=[guard, record, Checkpointing(checkpoints), *callbacks],
            max_steps=max_steps,
        )
    finally:
        checkpoints.close()
    train_seconds = seconds_before + time.perf_counter() - started

    test = evaluate(train, state, records, splits.test, batch_size, placement)
    val = evaluate(train, state, records, splits.val, batch_size, placement)
    metrics = {
        "test_accuracy": test["accuracy"],
        "val_accuracy": val["accuracy"],
        "test_loss": test["loss"],
        "train_seconds": round(train_seconds, 3),
        "images_per_second": throughput.images_per_second,
        "steps": int(state.step),
        "skipped_steps": int(state.skipped),
        "epochs": len(record.lines),
        "devices": placement.num_devices,
        "processes": jax.process_count(),
        "backend": jax.default_backend(),
        "device_kind": jax.devices()[0].device_kind,
    }
    write_atomic(metrics_path, json.dumps(metrics, indent=2, allow_nan=False) + "\n")

    from typedpipe.pipeline.export import export_model
    from typedpipe.pipeline.report import write_report

    if survey.spec is not None:  # a clean check always has a spec
        export_model(
            out / "model", config, state.params, state.rest, survey.spec, survey.class_names
        )
    write_report(
        out / "report.png",
        record.lines,
        survey.class_ids[splits.test],
        test["predictions"],
        survey.class_names,
        f"{config.name}: {config.model.name} on {config.data.source}",
    )
    return metrics
