"""Runs that survive faults: kills at every kind of write, Ctrl-C, locks, full and
read-only disks, corrupted checkpoints, changed configs on --resume."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from typedpipe import parse_config, train_run
from typedpipe.contracts import ContractError
from typedpipe.pipeline.runfolder import RunFolder, RunFolderError
from typedpipe.pipeline.train.checkpoint import Checkpoints

# Small enough to compile in a second; augmented and with dropout, so that an
# exact resume has keys, data order and RNG state to get right.
CONFIG = """
name = "faults"
[data]
source = "digits"

[[preprocess]]
op = "to_float"

[[preprocess]]
op = "random_flip"

[model]
name = "sequential"
input = [8, 8, 1]
layers = [{type = "conv", features = 8, activation = "relu"}, {type = "dropout", rate = 0.1},
          {type = "flatten"}, {type = "dense", features = 10}]

[train]
epochs = 2
batch_size = 64
learning_rate = 0.01
"""
STEPS_PER_EPOCH = 1257 // 64


def config_file(tmp_path: Path, text: str = CONFIG) -> Path:
    path = tmp_path / "faults.toml"
    path.write_text(text)
    return path


def train_cli(*args: str, failpoint: str | None = None, timeout: float = 120):
    env = dict(os.environ)
    env.pop("TYPEDPIPE_FAILPOINT", None)
    if failpoint:
        env["TYPEDPIPE_FAILPOINT"] = failpoint
    return subprocess.run(
        [sys.executable, "-m", "typedpipe.cli", "train", *args, "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("whole")
    result = train_cli(str(config_file(tmp)), "--out", str(tmp / "run"))
    assert result.returncode == 0, result.stderr
    return tmp / "run", json.loads(result.stdout)["metrics"]


@pytest.mark.parametrize(
    "failpoint",
    [
        "step:25",  # mid-epoch (the 6th step of the second), between steps
        "checkpoint:2",  # inside the second checkpoint write (the first is whole)
        "write-history.jsonl:2",  # the second epoch's history line, written but not renamed
        "write-contract.json:1",  # mid-export
    ],
)
def test_killed_anywhere_then_resumed_is_bit_identical(
    tmp_path, uninterrupted, failpoint, newest_checkpoint
):
    whole, whole_metrics = uninterrupted
    config, run = str(config_file(tmp_path)), str(tmp_path / "run")
    killed = train_cli(config, "--out", run, failpoint=failpoint)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    resumed = train_cli(config, "--out", run, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    metrics = json.loads(resumed.stdout)["metrics"]
    assert metrics["steps"] == whole_metrics["steps"] == 2 * STEPS_PER_EPOCH
    assert metrics["test_loss"] == whole_metrics["test_loss"]
    config = parse_config(CONFIG)
    step, expected = newest_checkpoint(whole, config, STEPS_PER_EPOCH)
    resumed_step, got = newest_checkpoint(tmp_path / "run", config, STEPS_PER_EPOCH)
    assert resumed_step == step
    jax.tree.map(np.testing.assert_array_equal, got, expected)
    lines = (tmp_path / "run" / "history.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
    assert not list((tmp_path / "run").glob(".*.tmp"))  # no half-written file is left


def test_ctrl_c_keeps_a_checkpoint_and_says_how_to_resume(tmp_path):
    config = config_file(tmp_path, CONFIG.replace("epochs = 2", "epochs = 200"))
    run = tmp_path / "run"
    process = subprocess.Popen(  # the command as users run it (`typedpipe.launch`)
        [sys.executable, "-m", "typedpipe", "train", str(config), "--out", str(run)],
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 90
    while not (run / "history.jsonl").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130
    assert "Traceback" not in stderr
    assert "--resume" in stderr and "interrupted after step" in stderr
    with Checkpoints(run / "checkpoints") as checkpoints:
        step = checkpoints.latest_step()
    assert step is not None and step >= STEPS_PER_EPOCH
    resumed = train_cli(str(config), "--out", str(run), "--resume", "--max-steps", str(step + 1))
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["metrics"]["steps"] == step + 1


def test_ctrl_c_before_training_exits_130_without_a_crash(tmp_path):
    """While the data is opened and the step compiles, XLA works on its own threads:
    the interpreter must not be torn down under them (that was a segfault)."""
    config = config_file(tmp_path, CONFIG.replace("epochs = 2", "epochs = 200"))
    process = subprocess.Popen(
        [sys.executable, "-m", "typedpipe", "train", str(config), "--out", str(tmp_path / "r")],
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    for line in process.stderr:  # the first phase is done: the next one is under way
        if " in " in line and "s" in line:
            break
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert "interrupted before the first step: nothing was trained" in stderr


def short(text: str = CONFIG, **train):
    config = parse_config(text)
    return dataclasses.replace(config, train=dataclasses.replace(config.train, **train))


@pytest.mark.parametrize(
    "change, expected",
    [
        (("seed = 7\n" + CONFIG), "seed: 0 -> 7"),
        (CONFIG.replace("features = 8,", "features = 16,"), "model.layers"),
        (CONFIG.replace("batch_size = 64", "batch_size = 32"), "batch_size: 64 -> 32"),
    ],
)
def test_resume_with_another_config_is_refused_with_what_changed(tmp_path, change, expected):
    train_run(short(epochs=1), tmp_path, max_steps=3)
    with pytest.raises(RunFolderError) as info:
        train_run(parse_config(change), tmp_path, resume=True)
    diagnostic = info.value.diagnostic
    assert diagnostic.code == "resume.mismatch"
    assert any(expected in item for item in diagnostic.items)
    assert "without --resume" in diagnostic.hint


def test_resume_without_a_checkpoint_says_so(tmp_path):
    with pytest.raises(RunFolderError) as info:
        train_run(short(epochs=1), tmp_path / "empty", resume=True)
    assert info.value.diagnostic.code == "resume.missing"


def test_a_second_run_on_a_locked_folder_is_refused_naming_the_first(tmp_path):
    holder = RunFolder(tmp_path, resume=False)
    try:
        with pytest.raises(RunFolderError) as info:
            train_run(short(epochs=1), tmp_path, max_steps=1)
    finally:
        holder.close()
    diagnostic = info.value.diagnostic
    assert diagnostic.code == "run.locked"
    assert f"process {os.getpid()}" in diagnostic.message


def test_a_lock_left_by_a_dead_process_is_taken_over(tmp_path):
    (tmp_path / ".lock").write_text("process 999999 on a-host-long-gone\n")
    metrics = train_run(short(epochs=1), tmp_path, max_steps=2)
    assert metrics["steps"] == 2


def test_a_failed_retrain_leaves_the_finished_run_intact(tmp_path):
    train_run(short(epochs=1), tmp_path)
    before = {
        p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file() and p.name != ".lock"
    }
    model_before = (tmp_path / "model" / "contract.json").read_bytes()
    killed = train_cli(
        str(config_file(tmp_path.parent, CONFIG)), "--out", str(tmp_path), failpoint="step:25"
    )
    assert killed.returncode == -signal.SIGKILL
    after = {
        p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file() and p.name != ".lock"
    }
    assert after == before
    assert (tmp_path / "model" / "contract.json").read_bytes() == model_before
    # The new run finishes (with --resume, from its own checkpoint) and then replaces the old.
    finished = train_cli(
        str(config_file(tmp_path.parent, CONFIG)), "--out", str(tmp_path), "--resume"
    )
    assert finished.returncode == 0, finished.stderr
    assert json.loads((tmp_path / "metrics.json").read_text())["steps"] == 2 * STEPS_PER_EPOCH
    assert not (tmp_path / ".next").exists()


@pytest.mark.parametrize("fractions", ["val_fraction = 0.0", "test_fraction = 0.0"])
def test_missing_val_or_test_splits_give_null_metrics_and_strict_json(tmp_path, fractions):
    text = CONFIG.replace('source = "digits"', f'source = "digits"\n{fractions}').replace(
        "epochs = 2", "epochs = 1"
    )
    result = train_cli(str(config_file(tmp_path, text)), "--out", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout, parse_constant=pytest.fail)  # no NaN, no Infinity
    on_disk = json.loads(
        (tmp_path / "run" / "metrics.json").read_text(), parse_constant=pytest.fail
    )
    key = "val_accuracy" if fractions.startswith("val") else "test_accuracy"
    assert printed["metrics"][key] is None and on_disk[key] is None
    assert (tmp_path / "run" / "report.png").stat().st_size > 10_000


def test_a_flipped_byte_in_a_checkpoint_is_detected(tmp_path):
    train_run(short(epochs=1), tmp_path, max_steps=3)
    files = sorted(
        p
        for p in (tmp_path / "checkpoints" / "3").rglob("*")
        if p.is_file() and p.stat().st_size > 64
    )
    target = max(files, key=lambda p: p.stat().st_size)
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(ContractError) as info:
        train_run(short(epochs=1), tmp_path, resume=True)
    diagnostic = info.value.diagnostic
    assert diagnostic.code == "checkpoint.corrupt"
    assert any(
        str(target.relative_to(tmp_path / "checkpoints" / "3")) in i for i in diagnostic.items
    )


@pytest.fixture
def small_disk(tmp_path):
    """A real 1 MiB filesystem (tmpfs), where this machine lets the test mount one."""
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True
    )
    if made.returncode:
        pytest.skip("cannot mount a tmpfs here")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


def test_a_full_disk_is_a_diagnostic_not_a_crash(tmp_path, small_disk):
    (small_disk / "ballast").write_bytes(b"\0" * (1024 * 1024 - 8192))
    result = train_cli(str(config_file(tmp_path)), "--out", str(small_disk / "run"))
    assert result.returncode == 1, result.stderr
    (diagnostic,) = json.loads(result.stdout)["diagnostics"]
    assert diagnostic["code"] == "io.write"
    assert "free space" in diagnostic["hint"]


def test_a_read_only_folder_is_a_diagnostic(tmp_path, small_disk):
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    result = train_cli(str(config_file(tmp_path)), "--out", str(small_disk / "run"))
    assert result.returncode == 1, result.stderr
    (diagnostic,) = json.loads(result.stdout)["diagnostics"]
    assert diagnostic["code"] == "io.write"
    assert "writable" in diagnostic["hint"]


def test_a_bug_is_exit_4_with_one_line_and_a_crash_log(tmp_path, capsys):
    """Not a diagnostic, not a bare traceback: one line naming the crash log."""
    from typedpipe import SOURCES, ArraySource
    from typedpipe.cli import EXIT_BUG, main

    class Broken(ArraySource):
        def arrays(self):
            images = np.zeros((640, 8, 8, 1), np.uint8)
            labels = np.arange(640, dtype=np.int32) % 10
            from typedpipe import LabelSpec

            return images, labels, LabelSpec("int", 10), tuple(map(str, range(10)))

        def records(self, survey):
            raise RuntimeError("a bug in a source")

    config = config_file(tmp_path, CONFIG.replace('"digits"', '"test_broken"'))
    with SOURCES.temporary("test_broken", Broken):
        code = main(["train", str(config), "--out", str(tmp_path / "run"), "--json"])
    captured = capsys.readouterr()
    assert code == EXIT_BUG
    printed = json.loads(captured.out)
    assert printed["ok"] is False
    log = Path(printed["crash_log"])
    assert "RuntimeError: a bug in a source" in log.read_text()
    assert "Traceback" not in captured.err
    assert "internal error" in captured.err and str(log) in captured.err
    log.unlink()
