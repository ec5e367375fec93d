import dataclasses
import io
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from rich.console import Console

from typedpipe.cli import (
    EXIT_INVALID,
    EXIT_NUMERIC,
    EXIT_OK,
    EXIT_USAGE,
    PhaseBars,
    counted,
    epoch_line,
    main,
    plain_diagnostics,
    render_diagnostics,
)
from typedpipe.cli.render import TABLE_MIN_WIDTH
from typedpipe.contracts import Diagnostic
from typedpipe.contracts.diagnostics import CODES
from typedpipe.pipeline.config import default_config_path


def run_json(capsys, *argv):
    code = main([*argv, "--json"])
    out = capsys.readouterr().out
    return code, json.loads(out)  # stdout holds exactly one JSON object


def write_config(tmp_path, old: str, new: str):
    path = tmp_path / "config.toml"
    path.write_text(default_config_path().read_text().replace(old, new))
    return path


def test_check_passes_on_the_default(capsys):
    code, result = run_json(capsys, "check", str(default_config_path()))
    assert code == EXIT_OK
    assert result == {"ok": True, "diagnostics": []}


def test_train_refuses_a_model_of_the_wrong_size_and_writes_nothing(tmp_path, capsys):
    config = write_config(tmp_path, "input = [8, 8, 1]", "input = [16, 16, 1]")
    out = tmp_path / "run"
    code, result = run_json(capsys, "train", str(config), "--out", str(out))
    assert code == EXIT_INVALID
    (diagnostic,) = result["diagnostics"]
    assert diagnostic["code"] == "shape.spatial"
    assert diagnostic["stage"] == "model"
    assert diagnostic["expected"] == "float b 16 16 1"
    assert diagnostic["got"] == "float32 b 8 8 1 in [0, 1]"
    assert 'op = "resize" height = 16 width = 16' in diagnostic["hint"]
    assert not (out / "checkpoints").exists()


def test_check_reports_every_fault_at_once(tmp_path, capsys):
    config = write_config(tmp_path, "input = [8, 8, 1]", "input = [16, 16, 3]\n")
    config.write_text(
        config.read_text().replace(
            '[[preprocess]]\nop = "to_float"\n'
            "scale = 0.00392156862745098  # 1/255: uint8 "
            "pixels onto [0, 1]\n",
            "",
        )
    )
    code, result = run_json(capsys, "check", str(config))
    assert code == EXIT_INVALID
    assert sorted(d["code"] for d in result["diagnostics"]) == [
        "dtype.input",
        "shape.channels",
        "shape.spatial",
    ]
    assert all(d["hint"] for d in result["diagnostics"])


def test_summary_names_the_layer_a_stride_collapses(tmp_path, capsys):
    conv = '{type = "conv", features = 8, kernel = 3, stride = 3, padding = "valid"}'
    config = write_config(
        tmp_path,
        'name = "small_cnn"',
        f'name = "sequential"\nlayers = '
        f'[{conv}, {conv}, {conv}, {{type = "flatten"}}, '
        '{type = "dense", features = 10}]',
    )
    code, result = run_json(capsys, "summary", str(config))
    assert code == EXIT_INVALID
    (diagnostic,) = result["diagnostics"]
    assert (diagnostic["code"], diagnostic["stage"]) == ("model.shape", "conv1")
    assert "shrinks 2x2 to 0x0" in diagnostic["message"]
    assert "input 8x8x1 -> conv0 2x2x8" in diagnostic["message"]


def test_summary_shows_the_shape_flow_with_params_and_flops(capsys):
    code, result = run_json(capsys, "summary", str(default_config_path()))
    assert code == EXIT_OK
    rows = {row["name"]: row for row in result["rows"]}
    assert rows["data"]["output"] == "uint8 b 8 8 1 in [0, 255]"
    assert rows["preprocess[0]"]["output"] == "float32 b 8 8 1 in [0, 1]"
    assert rows["conv0"]["params"] == 3 * 3 * 1 * 32 + 32
    assert rows["conv0"]["flops"] == 2 * 8 * 8 * 9 * 1 * 32
    assert rows["dense9"]["output"] == "b 10"
    assert result["params"] == sum(r["params"] for r in result["rows"])


def test_config_errors_exit_1_with_json(tmp_path, capsys):
    config = write_config(tmp_path, "epochs = 15", "epocs = 15")
    code, result = run_json(capsys, "check", str(config))
    assert code == EXIT_INVALID
    assert result["diagnostics"][0]["code"] == "config.unknown_key"
    assert result["diagnostics"][0]["hint"] == "rename epocs to epochs under [train]"


def test_missing_file_is_a_usage_error(tmp_path, capsys):
    assert main(["check", str(tmp_path / "nope.toml")]) == EXIT_USAGE
    assert "no such config file" in capsys.readouterr().err


def test_bad_flag_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "--epochs", "zero"])
    assert info.value.code == EXIT_USAGE


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """One short digits run shared by the eval and predict tests."""
    out = tmp_path_factory.mktemp("run")
    assert main(["train", "--out", str(out), "--epochs", "2"]) == EXIT_OK
    return out


def test_the_run_folder_holds_the_exported_model_with_its_contract(trained_run):
    contract = json.loads((trained_run / "model" / "contract.json").read_text())
    assert contract["input"] == {
        "height": 8,
        "width": 8,
        "channels": 1,
        "dtype": "uint8",
        "value_range": [0.0, 255.0],
        "layout": "nhwc",
    }
    assert contract["class_names"] == [str(i) for i in range(10)]
    assert (trained_run / "model" / "weights").is_dir()


def test_eval_reproduces_the_test_accuracy_of_training(trained_run, capsys):
    code, result = run_json(capsys, "eval", str(trained_run))
    assert code == EXIT_OK
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert result["split"] == "test" and result["images"] == 360
    assert result["accuracy"] == pytest.approx(metrics["test_accuracy"], abs=1e-9)
    assert result["loss"] == pytest.approx(metrics["test_loss"], rel=1e-4)


def test_predict_decodes_files_to_the_models_contract(trained_run, tmp_path, capsys):
    from PIL import Image
    from sklearn.datasets import load_digits

    from typedpipe.pipeline.export import ExportedModel

    digit = np.round(load_digits().images[5] * 255 / 16).astype(np.uint8)
    Image.fromarray(digit).save(tmp_path / "gray8.png")
    # The same digit stored as RGB: decoded to gray (R = G = B, so exactly), as trained.
    Image.fromarray(digit).convert("RGB").save(tmp_path / "rgb8.png")
    # A larger image is resized at decode to the model's 8x8.
    Image.fromarray(digit).resize((32, 32)).save(tmp_path / "big.png")
    code, result = run_json(
        capsys,
        "predict",
        str(trained_run),
        str(tmp_path / "gray8.png"),
        str(tmp_path / "rgb8.png"),
        str(tmp_path / "big.png"),
    )
    assert code == EXIT_OK and result["diagnostics"] == []
    gray, rgb, big = result["predictions"]
    expected = ExportedModel(trained_run / "model").predict(digit[None, ..., None])[0]
    assert gray["file"] == str(tmp_path / "gray8.png")
    assert gray["class"] == int(expected.argmax()) and gray["name"] == str(expected.argmax())
    assert gray["probability"] == pytest.approx(float(expected.max()), rel=1e-5)
    assert gray["top"][0] == {k: gray[k] for k in ("class", "name", "probability")}
    assert len(gray["top"]) == 3
    assert rgb == {**gray, "file": str(tmp_path / "rgb8.png")}
    assert big["class"] in range(10)


def test_predict_reports_a_broken_image_and_predicts_the_others(trained_run, tmp_path, capsys):
    from PIL import Image

    (tmp_path / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "b.png")
    code, result = run_json(
        capsys, "predict", str(trained_run), str(tmp_path / "a.png"), str(tmp_path / "b.png")
    )
    assert code == EXIT_INVALID
    [broken] = result["diagnostics"]
    assert broken["code"] == "data.corrupt" and broken["items"] == [str(tmp_path / "a.png")]
    assert [p["file"] for p in result["predictions"]] == [str(tmp_path / "b.png")]
    assert main(["predict", str(trained_run), str(tmp_path / "nope.png")]) == EXIT_USAGE
    assert main(["eval", str(tmp_path)]) == EXIT_USAGE
    assert "has no exported model" in capsys.readouterr().err


def test_the_exported_model_refuses_images_off_its_contract(trained_run):
    from typedpipe import ContractError
    from typedpipe.pipeline.export import ExportedModel

    model = ExportedModel(trained_run / "model")
    with pytest.raises(ContractError) as caught:
        model.predict(np.zeros((2, 8, 8, 3), np.uint8))
    assert caught.value.diagnostic.code == "shape.channels"
    with pytest.raises(ContractError) as caught:
        model.predict(np.zeros((2, 8, 8, 1), np.float32))
    assert caught.value.diagnostic.code == "dtype.input"
    assert caught.value.diagnostic.expected == "uint8 b 8 8 1 in [0, 255]"


def test_bench_times_the_step_of_a_config(capsys):
    code, result = run_json(capsys, "bench", "--steps", "3")
    assert code == EXIT_OK
    assert result["model"] == "small_cnn" and result["batch_size"] == 64
    assert result["step_ms"] > 0 and result["images_per_second"] > 0
    assert result["step_memory_bytes"] > 64 * 8 * 8  # at least the uint8 batch
    assert result["inference_images_per_second"] > 0
    # XLA's count for small_cnn's step: more than the forward pass alone, 3x3x32x32 MACs a pixel.
    assert result["flops_per_second"] > 2 * 9 * 32 * 32 * 64 * 64 / (result["step_ms"] / 1e3)
    assert result["mfu"] is None  # a CPU has no known peak


@pytest.mark.parametrize("name", ["digits.toml", "synthetic.toml"])
def test_every_shipped_example_passes_check(name, capsys):
    code, result = run_json(capsys, "check", str(default_config_path().parent / name))
    assert (code, result) == (EXIT_OK, {"ok": True, "diagnostics": []})


@pytest.mark.parametrize("command", ["check", "summary", "train", "bench"])
def test_an_empty_config_path_is_a_usage_error(command, capsys):
    assert main([command, ""]) == EXIT_USAGE
    assert "config path is empty" in capsys.readouterr().err


# --- output that reads well anywhere ---------------------------------------------------------

CHANNELS = Diagnostic(
    "shape.channels",
    "argument 'images' has 1 channel, not 3",
    stage="model",
    expected="float b 64 64 3",
    got="float32 8 64 64 1",
    hint='add [[preprocess]] op = "to_rgb"',
    items=[f"{i}.png" for i in range(20)],
    total_items=1_916,
)


def test_piped_diagnostics_are_plain_blocks_with_the_count_of_every_item():
    warning = Diagnostic(
        "dtype.input",
        "float64 images are narrowed to float32",
        stage="data",
        expected="float32",
        got="float64",
        hint="store float32 images,\nor enable jax_enable_x64",
        severity="warning",
        items=["#3", "#7"],
    )
    assert plain_diagnostics([warning, CHANNELS]) == (
        "1 error, 1 warning\n"
        "\n"
        "error   shape.channels   in model\n"
        "        argument 'images' has 1 channel, not 3\n"
        "        expected: float b 64 64 3\n"
        "        got:      float32 8 64 64 1\n"
        '        fix:      add [[preprocess]] op = "to_rgb"\n'
        "        files:    0.png, 1.png, 2.png, 3.png, 4.png, ... 1,911 more\n"
        "\n"
        "warning dtype.input      in data\n"
        "        float64 images are narrowed to float32\n"
        "        expected: float32\n"
        "        got:      float64\n"
        "        fix:      store float32 images,\n"
        "                  or enable jax_enable_x64\n"
        "        samples:  #3, #7"
    )


def test_errors_and_warnings_are_counted_apart():
    warning = dataclasses.replace(CHANNELS, severity="warning")
    assert counted([CHANNELS, CHANNELS, warning]) == "2 errors, 1 warning"
    assert counted([warning, warning]) == "2 warnings"
    assert counted([CHANNELS]) == "1 error"


@pytest.mark.parametrize("width", [TABLE_MIN_WIDTH, 200])
def test_the_terminal_table_never_breaks_a_code(width, monkeypatch):
    monkeypatch.setenv("TERM", "xterm-256color")
    monkeypatch.delenv("NO_COLOR", raising=False)
    diagnostics = [
        dataclasses.replace(CHANNELS, code=code, severity="warning" if i % 3 else "error")
        for i, code in enumerate(CODES)
    ]
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, color_system=None, width=width)
    render_diagnostics(diagnostics, console)
    table = screen.getvalue()
    assert "┃" in table  # a table, not the plain blocks
    title = f"{sum(d.is_error for d in diagnostics)} errors, "
    assert title in table and "warnings" in table
    for code in CODES:
        assert re.search(rf"^│ {re.escape(code)} +│", table, re.M), code
    assert re.search(r"^│ warning +│", table, re.M) and re.search(r"^│ error +│", table, re.M)
    assert "1,911 more" in table


@pytest.mark.parametrize(
    "environment, width",
    [({"NO_COLOR": "1"}, 120), ({"TERM": "dumb"}, 120), ({}, TABLE_MIN_WIDTH - 1)],
)
def test_no_color_dumb_and_narrow_terminals_get_plain_blocks(environment, width, monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    screen = io.StringIO()
    render_diagnostics([CHANNELS], Console(file=screen, force_terminal=True, width=width))
    assert screen.getvalue() == plain_diagnostics([CHANNELS]) + "\n"


def test_check_with_only_warnings_says_so_and_exits_0(tmp_path, capsys):
    images = np.random.default_rng(0).uniform(size=(30, 8, 8, 1))  # float64: a warning
    np.savez(tmp_path / "data.npz", images=images, labels=np.arange(30) % 3)
    config = tmp_path / "config.toml"
    config.write_text(
        f'[data]\nsource = "npz"\npath = "{tmp_path / "data.npz"}"\n'
        '[model]\nname = "small_cnn"\ninput = [8, 8, 1]\nnum_classes = 3\n'
        "[train]\nbatch_size = 8\n"
    )
    assert main(["check", str(config)]) == EXIT_OK
    out = capsys.readouterr().out
    assert out.startswith("1 warning\n\nwarning dtype.input   in data\n")
    assert out.endswith(f"ok: {config} passes every check, with 1 warning\n")


def test_the_epoch_line_tells_the_epoch_mean_from_val():
    from typedpipe.pipeline.train.loop import EpochStats

    stats = EpochStats(3, 0.012345, 0.97, 4.5e28, 0.1, 2.04, 2)
    no_val = EpochStats(10, 1.5, 0.5, None, None, 12.25, 0)
    lines = [epoch_line(stats, 15), epoch_line(no_val, 10)]
    assert lines == [
        "epoch  3/15  train loss 0.01235  acc 0.970 (epoch mean)  val loss 4.5e+28  acc 0.100"
        "   2.0 s  skipped 2 steps",
        "epoch 10/10  train loss 1.5      acc 0.500 (epoch mean)  val loss -        acc -    "
        "  12.2 s",
    ]


def test_phases_past_a_second_get_a_bar_and_a_line_on_stderr():
    from rich.progress import Progress

    from typedpipe.progress import listening, track

    screen = io.StringIO()
    progress = Progress(console=Console(file=screen, width=80))
    with listening(PhaseBars(progress, after_seconds=0.0)):
        assert list(track(range(300), "check files", total=300)) == list(range(300))
        assert not progress.tasks  # the bar goes when the phase ends
    with listening(PhaseBars(progress, after_seconds=3600.0)):
        list(track(range(300), "decode", total=300))
    assert not progress.tasks
    steps = PhaseBars(progress, after_seconds=0.0)
    steps.begin("compiling the step", progress.add_task("train", total=None, status=""))
    assert progress.tasks[0].fields["status"] == "compiling the step"
    steps.begin("opening the data")
    steps.end()
    steps.end()  # nothing is running: no line
    assert re.fullmatch(
        r"check files: 300 in \d+\.\d s\n"
        r"compiling the step in \d+\.\d s\nopening the data in \d+\.\d s\n",
        screen.getvalue(),
    )


def _typedpipe(*argv: str) -> subprocess.CompletedProcess:
    """The command as a CI log sees it: both streams piped, and a narrow COLUMNS."""
    return subprocess.run(
        [sys.executable, "-m", "typedpipe.cli", *argv],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "40"},
        timeout=300,
    )


def _image_folder_faults(tmp_path):
    """An image folder with a truncated PNG, a file of another size and one of another mode."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for label in range(3):
        (tmp_path / "images" / f"c{label}").mkdir(parents=True)
        for i in range(8):
            pixels = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "images" / f"c{label}" / f"{i}.png")
    whole = (tmp_path / "images" / "c0" / "0.png").read_bytes()
    (tmp_path / "images" / "c0" / "cut.png").write_bytes(whole[: len(whole) // 2])
    Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).save(
        tmp_path / "images" / "c1" / "odd.png"
    )
    Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)).save(
        tmp_path / "images" / "c2" / "gray.png"
    )
    return (
        f'[data]\nsource = "imagefolder"\npath = "{tmp_path / "images"}"\n'
        '[[preprocess]]\nop = "to_float"\n'
        '[model]\nname = "small_cnn"\ninput = [16, 16, 3]\nnum_classes = 3\n'
        "[train]\nbatch_size = 8\n"
    )


def _nonfinite_values(tmp_path):
    images = np.random.default_rng(0).uniform(size=(30, 8, 8, 1)).astype(np.float32)
    images[4, 0, 0, 0] = np.nan
    np.savez(tmp_path / "data.npz", images=images, labels=np.arange(30) % 3)
    return (
        f'[data]\nsource = "npz"\npath = "{tmp_path / "data.npz"}"\n'
        '[model]\nname = "small_cnn"\ninput = [8, 8, 1]\nnum_classes = 3\n'
        "[train]\nbatch_size = 8\n"
    )


PIPED_FAULTS = {
    "model": (
        lambda tmp: default_config_path().read_text().replace("[8, 8, 1]", "[16, 16, 3]"),
        {"shape.spatial", "shape.channels"},
    ),
    "config": (
        lambda tmp: default_config_path().read_text().replace("batch_size", "batchsize"),
        {"config.unknown_key"},
    ),
    "folder": (_image_folder_faults, {"data.corrupt", "data.size_mixed", "data.mode_mixed"}),
    "values": (_nonfinite_values, {"value.nonfinite"}),
}


@pytest.mark.parametrize("fault", PIPED_FAULTS)
def test_piped_check_shows_every_code_whole_on_one_line(fault, tmp_path):
    make, codes = PIPED_FAULTS[fault]
    config = tmp_path / "config.toml"
    config.write_text(make(tmp_path))
    plain = _typedpipe("check", str(config))
    assert plain.returncode == EXIT_INVALID, plain.stderr
    assert "┃" not in plain.stdout and "│" not in plain.stdout  # no table in a pipe
    # Each block's first line: severity, the whole code, its stage. Nothing wraps.
    first_lines = r"^(?:error|warning) +([a-z_]+\.[a-z_]+)(?: +in .*)?$"
    found = set(re.findall(first_lines, plain.stdout, re.M))
    assert codes <= found, plain.stdout
    assert plain.stdout.startswith(f"{len(found)} error")
    as_json = _typedpipe("check", str(config), "--json")
    assert as_json.returncode == EXIT_INVALID
    [line] = as_json.stdout.splitlines()  # one JSON object, on one line
    diagnostics = json.loads(line)["diagnostics"]
    assert codes <= {d["code"] for d in diagnostics}
    assert {d["severity"] for d in diagnostics} == {"error"}
    assert found == {d["code"] for d in diagnostics}


def test_piped_train_names_numeric_nonfinite_whole_on_one_line(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text(
        default_config_path()
        .read_text()
        .replace('optimizer = "adam"', 'optimizer = "sgd"')
        .replace("learning_rate = 3e-3", "learning_rate = 1e30")
    )
    run = _typedpipe("train", str(config), "--out", str(tmp_path / "run"), "--max-steps", "30")
    assert run.returncode == EXIT_NUMERIC, run.stderr
    assert re.search(r"^error +numeric\.nonfinite +in \S+$", run.stderr, re.M), run.stderr
    assert re.search(r"^1 error$", run.stderr, re.M)


def test_version_names_the_installed_package(capsys):
    from importlib.metadata import version

    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == EXIT_OK
    assert capsys.readouterr().out == f"typedpipe {version('typedpipe')}\n"


def test_devices_on_cpu_warn_of_xla_collectives_and_the_hint_silences_it(capsys):
    """Several CPU devices of one process can deadlock in XLA's all-reduce: the command
    says so and goes on; dropping --devices, as the hint says, trains without the risk."""
    from typedpipe.pipeline.train.sharding import collectives_warning

    assert main(["bench", "--devices", "2", "--steps", "1", "--json"]) == EXIT_OK
    captured = capsys.readouterr()
    assert json.loads(captured.out)["devices"] == 2
    assert "devices.collectives" in captured.err and "drop --devices" in captured.err
    hint = collectives_warning(2).hint
    assert hint.startswith("drop --devices")
    assert main(["bench", "--steps", "1", "--json"]) == EXIT_OK
    captured = capsys.readouterr()
    assert json.loads(captured.out)["devices"] == 1
    assert "devices.collectives" not in captured.err
    assert collectives_warning(1) is None
