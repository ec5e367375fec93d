import dataclasses
import json

import jax
import numpy as np
import pytest

from typedpipe import TrainingStopped, parse_config, train_run
from typedpipe.cli import default_config_path
from typedpipe.contracts import LabelSpec
from typedpipe.pipeline.config import load_config
from typedpipe.pipeline.numerics import all_finite
from typedpipe.pipeline.sources import Dataset
from typedpipe.pipeline.train import Trainer, fit


def digits_config(**train):
    config = load_config(default_config_path())
    return dataclasses.replace(config, train=dataclasses.replace(config.train, **train))


def test_short_run_learns_and_writes_the_run_folder(tmp_path):
    metrics = train_run(digits_config(epochs=3), tmp_path)
    assert metrics["test_accuracy"] > 0.9
    assert metrics["steps"] == 3 * (1257 // 64)
    assert metrics["skipped_steps"] == 0
    assert metrics["backend"] == "cpu" and metrics["devices"] == 1
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    for key in (
        "test_accuracy",
        "val_accuracy",
        "train_seconds",
        "images_per_second",
        "steps",
        "skipped_steps",
        "devices",
        "backend",
    ):
        assert key in on_disk
    history = [json.loads(line) for line in (tmp_path / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert (tmp_path / "report.png").stat().st_size > 10_000
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["2", "3"]
    assert parse_config((tmp_path / "config.toml").read_text()).train.epochs == 3


def test_resume_continues_from_the_last_checkpoint(tmp_path):
    train_run(digits_config(epochs=1), tmp_path)
    metrics = train_run(digits_config(epochs=2), tmp_path, resume=True)
    history = (tmp_path / "history.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in history] == [1, 2]
    assert metrics["steps"] == 1257 // 64  # only the second epoch ran


def test_data_parallel_over_four_devices_matches_one(tmp_path):
    """The same global batch split over 4 devices is the same computation."""
    assert jax.device_count() == 4
    single = train_run(digits_config(epochs=2), tmp_path / "one", devices=1)
    sharded = train_run(digits_config(epochs=2), tmp_path / "four", devices=4)
    assert sharded["devices"] == 4
    assert sharded["test_accuracy"] > 0.9
    assert abs(sharded["test_loss"] - single["test_loss"]) < 1e-2 * single["test_loss"] + 1e-3


def nan_config(**train):
    text = """
    [model]
    name = "sequential"
    input = [4, 4, 1]
    num_classes = 2
    layers = [{type = "flatten", name = "flat"}, {type = "dense", features = 2, name = "head"}]
    [train]
    batch_size = 8
    epochs = 1
    """
    config = parse_config(text)
    return dataclasses.replace(config, train=dataclasses.replace(config.train, **train))


def nan_dataset():
    images = np.random.default_rng(0).random((64, 4, 4, 1), dtype=np.float32)
    images[::2, 0, 0, 0] = np.nan  # a NaN pixel in every batch
    labels = np.arange(64, dtype=np.int32) % 2
    return Dataset(images, labels, LabelSpec("int", 2), ("a", "b"))


def test_nonfinite_steps_are_skipped_and_never_written():
    data = nan_dataset()
    trainer = Trainer(nan_config(max_consecutive_skips=100), "int", steps_per_epoch=8)
    before = jax.device_get(trainer.state.params)
    counts = fit(trainer, data, data, epochs=1)
    assert counts["skipped_steps"] == counts["steps"] == 8
    assert bool(all_finite(trainer.state.params, trainer.state.opt_state))
    after = jax.device_get(trainer.state.params)
    jax.tree.map(np.testing.assert_array_equal, before, after)


@pytest.mark.parametrize("policy", [{"on_nonfinite": "stop"}, {"max_consecutive_skips": 3}])
def test_guard_stops_and_names_where_nan_appeared(policy):
    data = nan_dataset()
    trainer = Trainer(nan_config(epochs=3, **policy), "int", steps_per_epoch=8)
    with pytest.raises(TrainingStopped) as info:
        fit(trainer, data, data, epochs=3)
    diagnostic = info.value.diagnostic
    assert diagnostic.code == "numeric.nonfinite"
    assert diagnostic.stage == "preprocess (the input batch)"
    assert diagnostic.hint
    assert bool(all_finite(trainer.state.params))


def test_synthetic_data_is_learnable(tmp_path):
    config = parse_config(
        'name = "synthetic"\n[data]\nsource = "synthetic"\nnum_samples = 512\n'
        "[model]\ninput = [8, 8, 3]\nnum_classes = 4\n"
        "[train]\nepochs = 3\nbatch_size = 32\nlearning_rate = 3e-3\n"
    )
    metrics = train_run(config, tmp_path)
    assert metrics["test_accuracy"] > 0.9  # chance is 0.25
