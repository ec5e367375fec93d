"""A training run end to end: check, load, train, evaluate, and the run folder.

Run folder (`runs/<name>` by default): config.toml (resolved), metrics.json,
history.jsonl, checkpoints/ (Orbax), model/ (the exported bundle), report.png.
"""

import dataclasses
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np

from typedpipe.contracts import ContractError
from typedpipe.pipeline import sources
from typedpipe.pipeline.check import check_pipeline, errors
from typedpipe.pipeline.checkpoint import Checkpoints
from typedpipe.pipeline.config import Config
from typedpipe.pipeline.export import export_model
from typedpipe.pipeline.report import write_report
from typedpipe.pipeline.sharding import Placement
from typedpipe.pipeline.train import EpochStats, Trainer, fit


@dataclasses.dataclass
class Callbacks:
    """Progress hooks; the CLI draws its progress bar through these."""

    on_phase: Callable[[str], None] = lambda what: None  # "checking", "loading data", ...
    on_start: Callable[[int, int], None] = lambda epochs, steps_per_epoch: None
    on_step: Callable[[int, float], None] = lambda step, loss: None
    on_epoch: Callable[[EpochStats], None] = lambda stats: None


def train_run(
    config: Config,
    out: Path,
    *,
    epochs: int | None = None,
    max_steps: int | None = None,
    resume: bool = False,
    devices: int | None = None,
    callbacks: Callbacks | None = None,
) -> dict:
    """Check, then train `config`, writing the run folder to `out`.

    Returns:
        The metrics written to `out/metrics.json`.

    Raises:
        ContractError / ConfigError: the check found errors; nothing was written.
        TrainingStopped: the numeric guard ended training.
    """
    callbacks = callbacks or Callbacks()
    if epochs is not None:
        config = dataclasses.replace(config, train=dataclasses.replace(config.train, epochs=epochs))
    placement = Placement(devices=devices if devices is not None else 1)
    callbacks.on_phase("checking the pipeline and its data")
    survey = sources.survey(config)
    found = errors(check_pipeline(config, survey, devices=placement.num_devices))
    if found:
        raise ContractError(found)
    callbacks.on_phase("loading the data")
    dataset = sources.load(config, survey)
    parts = sources.split(dataset, config.data.val_fraction, config.data.test_fraction, config.seed)

    train = config.train
    steps_per_epoch = len(parts.train) // train.batch_size
    trainer = Trainer(config, dataset.label_spec.format, steps_per_epoch, placement)
    out.mkdir(parents=True, exist_ok=True)
    checkpoints_dir = out / "checkpoints"
    if not resume and checkpoints_dir.exists():
        shutil.rmtree(checkpoints_dir)
    checkpoints = Checkpoints(checkpoints_dir)
    history_path = out / "history.jsonl"
    start_epoch, history = 0, []
    latest = checkpoints.latest_epoch()
    if resume and latest is not None:
        start_epoch = latest
        trainer.state = checkpoints.restore(start_epoch, trainer.state)
        if history_path.exists():
            history = [json.loads(line) for line in history_path.read_text().splitlines()]
            history = history[:start_epoch]
    (out / "config.toml").write_text(config.to_toml())

    def on_epoch(stats: EpochStats) -> None:
        history.append(dataclasses.asdict(stats))
        history_path.write_text("".join(json.dumps(h) + "\n" for h in history))
        checkpoints.save(stats.epoch, trainer.state)
        callbacks.on_epoch(stats)

    callbacks.on_start(train.epochs - start_epoch, steps_per_epoch)
    started = time.perf_counter()
    try:
        counts = fit(
            trainer,
            parts.train,
            parts.val,
            epochs=train.epochs,
            start_epoch=start_epoch,
            max_steps=max_steps,
            on_epoch=on_epoch,
            on_step=callbacks.on_step,
        )
    finally:
        checkpoints.close()
    train_seconds = time.perf_counter() - started

    test = trainer.evaluate(parts.test, train.batch_size)
    val = trainer.evaluate(parts.val, train.batch_size)
    metrics = {
        "test_accuracy": test["accuracy"],
        "val_accuracy": val["accuracy"],
        "test_loss": test["loss"],
        "train_seconds": round(train_seconds, 3),
        **counts,
        "epochs": len(history),
        "devices": placement.num_devices,
        "backend": jax.default_backend(),
        "device_kind": jax.devices()[0].device_kind,
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    export_model(
        out / "model",
        config,
        trainer.state.params,
        trainer.state.rest,
        dataset.spec,
        dataset.class_names,
    )
    write_report(
        out / "report.png",
        history,
        parts.test.class_ids,
        np.asarray(test["predictions"]),
        dataset.class_names,
        f"{config.name}: {config.model.name} on {config.data.source}",
    )
    return metrics
