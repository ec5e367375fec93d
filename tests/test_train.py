import dataclasses
import json

import jax
import numpy as np
import pytest

from typedpipe import (
    Callback,
    TrainingStopped,
    fit,
    load_config,
    make_train,
    parse_config,
    train_run,
)
from typedpipe.contracts import LabelSpec
from typedpipe.pipeline.config import default_config_path
from typedpipe.pipeline.sources import Splits, survey_arrays
from typedpipe.pipeline.train.callbacks import NumericGuard
from typedpipe.pipeline.train.numerics import all_finite


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
    steps = 1257 // 64
    assert sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.is_dir()) == [
        2 * steps,
        3 * steps,
    ]
    assert parse_config((tmp_path / "config.toml").read_text()).train.epochs == 3


# Digits through a small network that compiles in a second, with augmentations and
# dropout: an exact resume has step keys, data order and RNG state to get right.
SMALL = """
[data]
source = "digits"

[[preprocess]]
op = "to_float"

[[preprocess]]
op = "random_flip"

[[preprocess]]
op = "random_crop"
height = 8
width = 8
padding = 1

[model]
name = "sequential"
input = [8, 8, 1]
layers = [{type = "conv", features = 16, activation = "relu"}, {type = "dropout", rate = 0.1},
          {type = "flatten"}, {type = "dense", features = 10}]

[train]
batch_size = 64
learning_rate = 0.01
"""


def augmented_config(epochs: int):
    config = parse_config(SMALL)
    return dataclasses.replace(config, train=dataclasses.replace(config.train, epochs=epochs))


@pytest.fixture(params=["resident", "streamed"])
def feeding(request, monkeypatch):
    """Train from a split held on the devices (the default where it fits), or streamed."""
    from typedpipe.pipeline.train import resident

    if request.param == "streamed":
        monkeypatch.setattr(resident, "RESIDENT_BYTES", 0)
    return request.param


def test_a_run_stopped_mid_epoch_resumes_bit_identical(tmp_path, newest_checkpoint, feeding):
    """Augmentations and the data order are keyed by the step: stopping changes nothing."""
    config = augmented_config(epochs=2)
    whole = train_run(config, tmp_path / "whole")
    stopped = train_run(config, tmp_path / "parts", max_steps=25)  # epoch 2, step 6 of 19
    assert stopped["steps"] == 25 and stopped["epochs"] == 1
    resumed = train_run(config, tmp_path / "parts", resume=True)
    assert resumed["steps"] == whole["steps"] == 38 and resumed["epochs"] == 2
    assert resumed["test_loss"] == whole["test_loss"]
    assert resumed["train_seconds"] > stopped["train_seconds"]  # the whole run is counted
    step, expected = newest_checkpoint(tmp_path / "whole", config, 19)
    resumed_step, got = newest_checkpoint(tmp_path / "parts", config, 19)
    assert resumed_step == step == 38
    jax.tree.map(np.testing.assert_array_equal, got, expected)  # weights, optimizer, RNG: all

    def lines(run):
        text = (run / "history.jsonl").read_text().splitlines()
        return [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in text]

    assert lines(tmp_path / "parts") == lines(tmp_path / "whole")


class SeenLabels(Callback):
    def __init__(self):
        self.labels = []

    def on_step_end(self, loop, batch, metrics):
        assert batch.mask.all() and isinstance(batch.images, np.ndarray)
        self.labels.append(batch.labels.copy())


def test_a_split_on_the_devices_trains_exactly_as_one_streamed(
    tmp_path, newest_checkpoint, monkeypatch
):
    """The same batches, the same steps, the same weights, and callbacks see the same
    host batches, whether each step streams its batch or gathers it on the device."""
    from typedpipe.pipeline.train import resident

    config = augmented_config(epochs=2)
    seen = {}
    for feeding in ("resident", "streamed"):
        if feeding == "streamed":
            monkeypatch.setattr(resident, "RESIDENT_BYTES", 0)
        seen[feeding] = SeenLabels()
        train_run(config, tmp_path / feeding, max_steps=25, callbacks=[seen[feeding]])
    np.testing.assert_array_equal(seen["resident"].labels, seen["streamed"].labels)
    step, streamed = newest_checkpoint(tmp_path / "streamed", config, 19)
    assert newest_checkpoint(tmp_path / "resident", config, 19)[0] == step == 25
    jax.tree.map(
        np.testing.assert_array_equal,
        newest_checkpoint(tmp_path / "resident", config, 19)[1],
        streamed,
    )


class CountingRecords:
    """Records in memory that count how many are read."""

    def __init__(self, count):
        self.images = np.zeros((count, 8, 8, 1), np.uint8)
        self.labels = np.arange(count) % 10
        self.read = 0

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        self.read += 1
        return self.images[index], self.labels[index]


def test_a_split_past_the_budget_stays_off_the_devices(monkeypatch):
    """The size is known from one record, before the split is read or anything reserved."""
    from typedpipe.pipeline.train import resident
    from typedpipe.pipeline.train.sharding import Placement

    records = CountingRecords(100)
    split_bytes = 100 * (64 + records.labels[0].nbytes)
    monkeypatch.setattr(resident, "RESIDENT_BYTES", split_bytes - 1)
    assert resident.ResidentSplit.load(records, np.arange(100), Placement(1)) is None
    assert records.read == 1
    monkeypatch.setattr(resident, "RESIDENT_BYTES", split_bytes)
    split = resident.ResidentSplit.load(records, np.arange(10, 100), Placement(1))
    assert split is not None and split.images.shape == (90, 8, 8, 1)
    assert list(split.row_of[[9, 10, 99]]) == [-1, 0, 89]
    np.testing.assert_array_equal(np.asarray(split.on_devices[1]), records.labels[10:])


def test_data_parallel_over_four_devices_matches_one(tmp_path):
    """The same global batch split over 4 devices is the same computation."""
    assert jax.device_count() == 4
    single = train_run(augmented_config(epochs=2), tmp_path / "one", devices=1)
    sharded = train_run(augmented_config(epochs=2), tmp_path / "four", devices=4)
    assert sharded["devices"] == 4
    assert sharded["test_accuracy"] > 0.5  # two epochs with augmentation; chance is 0.1
    assert abs(sharded["test_loss"] - single["test_loss"]) < 1e-2 * single["test_loss"] + 1e-3


def test_one_process_trains_on_one_device_unless_told_otherwise():
    """Four CPU devices here; splitting a batch over them is `--devices 4`'s to ask for."""
    from typedpipe.pipeline.train import sharding

    assert jax.device_count() == 4 and sharding.default_devices() == 1


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


def nan_data():
    images = np.random.default_rng(0).random((64, 4, 4, 1), dtype=np.float32)
    images[::2, 0, 0, 0] = np.nan  # a NaN pixel in every batch
    labels = np.arange(64, dtype=np.int32) % 2
    survey = survey_arrays(images, labels, LabelSpec("int", 2), ("a", "b"))
    everything = np.arange(64)
    return survey.records, Splits(everything, everything, everything)


def fit_nan(config, callbacks=()):
    train = make_train(config, "int", steps_per_epoch=8)
    state = jax.jit(train.init_state)(jax.random.key(0))
    records, splits = nan_data()
    guard = NumericGuard(
        train,
        max_consecutive=config.train.max_consecutive_skips,
        stop_at_first=config.train.on_nonfinite == "stop",
    )
    return (
        train,
        state,
        lambda: fit(
            train,
            state,
            records,
            splits,
            batch_size=8,
            epochs=config.train.epochs,
            seed=0,
            key=jax.random.key(0),
            callbacks=[guard, *callbacks],
        ),
    )


def test_nonfinite_steps_are_skipped_and_never_written():
    _, before, run = fit_nan(nan_config(max_consecutive_skips=100))
    before = jax.device_get(before.params)
    state, _ = run()
    assert int(state.skipped) == int(state.step) == 8
    assert bool(all_finite(state.params, state.opt_state))
    jax.tree.map(np.testing.assert_array_equal, before, jax.device_get(state.params))


@pytest.mark.parametrize("policy", [{"on_nonfinite": "stop"}, {"max_consecutive_skips": 3}])
def test_guard_stops_and_names_where_nan_appeared(policy):
    _, _, run = fit_nan(nan_config(epochs=3, **policy))
    with pytest.raises(TrainingStopped) as info:
        run()
    diagnostic = info.value.diagnostic
    assert diagnostic.code == "numeric.nonfinite"
    assert diagnostic.stage == "preprocess (the input batch)"
    assert diagnostic.hint


class StopAfter(Callback):
    """A user's callback, through the public API only."""

    def __init__(self, steps):
        self.steps, self.seen = steps, []

    def on_step_end(self, loop, batch, metrics):
        self.seen.append(loop.step)
        loop.should_stop = loop.step >= self.steps


def test_a_callback_stops_training_after_n_steps(tmp_path):
    stop = StopAfter(7)
    metrics = train_run(digits_config(epochs=3), tmp_path, callbacks=[stop])
    assert stop.seen == [1, 2, 3, 4, 5, 6, 7]
    assert metrics["steps"] == 7 and metrics["epochs"] == 0
    assert metrics["test_accuracy"] is not None  # evaluated and exported all the same
    assert (tmp_path / "model" / "contract.json").is_file()


def test_the_train_step_is_pure_and_keyed_by_the_step(numpy_tree):
    """Same state, same batch, same base key: the same new state, every time."""
    config = augmented_config(epochs=1)
    train = make_train(config, "int", steps_per_epoch=10)
    state = jax.jit(train.init_state)(jax.random.key(0))
    images = np.random.default_rng(0).integers(0, 256, (8, 8, 8, 1), dtype=np.uint8)
    from typedpipe.pipeline.sources import Batch

    batch = Batch(images, np.arange(8, dtype=np.int32) % 10, np.ones(8, bool))
    step = jax.jit(train.train_step)
    first, _ = step(state, batch, jax.random.key(1))
    again, _ = step(state, batch, jax.random.key(1))
    jax.tree.map(np.testing.assert_array_equal, numpy_tree(first), numpy_tree(again))
    assert int(first.step) == 1 and int(state.step) == 0


def test_synthetic_data_is_learnable(tmp_path):
    config = parse_config(
        'name = "synthetic"\n[data]\nsource = "synthetic"\nnum_samples = 512\n'
        "[model]\ninput = [8, 8, 3]\nnum_classes = 4\n"
        "[train]\nepochs = 3\nbatch_size = 32\nlearning_rate = 3e-3\n"
    )
    metrics = train_run(config, tmp_path)
    assert metrics["test_accuracy"] > 0.9  # chance is 0.25


def test_the_contracts_compile_away():
    """Checked and unchecked, the train step is one program: the contracts cost nothing
    per step. Only the metadata (source lines, op names) may differ."""
    import re

    from typedpipe.contracts import unchecked
    from typedpipe.pipeline.sources import Batch

    config = augmented_config(epochs=1)
    images = np.zeros((8, 8, 8, 1), np.uint8)
    batch = Batch(images, np.arange(8, dtype=np.int32) % 10, np.ones(8, bool))

    def compiled_step() -> str:
        train = make_train(config, "int", steps_per_epoch=10)
        state = jax.jit(train.init_state)(jax.random.key(0))
        text = jax.jit(train.train_step).lower(state, batch, jax.random.key(1)).compile().as_text()
        return re.sub(r", metadata=\{[^}]*\}", "", text)

    checked = compiled_step()
    with unchecked():
        assert compiled_step() == checked
