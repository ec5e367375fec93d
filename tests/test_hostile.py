"""Hostile and odd input: no traceback, no memory blow-up, no silent damage.

Every case runs the command line in-process, as a user would, and asserts the
code and the hint; the fuzz test at the end mutates the shipped configs a few
hundred times and asserts that `check --json` always answers with one strict
JSON object and exit 0 or 1.
"""

import builtins
import copy
import datetime
import json
import math
import os
import random
import shutil
import struct
import tomllib
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import tomli_w
from PIL import Image

import typedpipe as tp
from typedpipe.cli import EXIT_INVALID, EXIT_OK, EXIT_USAGE, main
from typedpipe.pipeline.sources.decode import TooLarge, decode

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _strict(text: str):
    """JSON as the design promises it: no NaN, no Infinity."""

    def refuse(constant):
        raise ValueError(f"non-strict JSON constant {constant}")

    return json.loads(text, parse_constant=refuse)


def check(capsys, tmp_path: Path, config: dict | str | bytes) -> tuple[int, dict]:
    path = tmp_path / "config.toml"
    if isinstance(config, bytes):
        path.write_bytes(config)
    else:
        path.write_text(config if isinstance(config, str) else tomli_w.dumps(config))
    code = main(["check", str(path), "--json"])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, _strict(captured.out)


def only(result: dict, code: str) -> dict:
    found = [d for d in result["diagnostics"] if d["code"] == code]
    assert found, f"no {code} among {[d['code'] for d in result['diagnostics']]}"
    return found[0]


def digits(**tables) -> dict:
    config = {
        "data": {"source": "digits"},
        "preprocess": [{"op": "to_float"}],
        "model": {"name": "small_cnn", "input": [8, 8, 1], "num_classes": 10},
        "train": {"batch_size": 32},
    }
    for name, values in tables.items():
        config[name] = {**config.get(name, {}), **values}
    return config


def png(path: Path, pixels: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels, mode).save(path)
    return path


def png_header(path: Path, width: int, height: int) -> Path:
    """A tiny, valid PNG whose header declares `width` x `height` pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )
    return path


def folder(tmp: Path, classes=("class0", "class1", "class2"), per_class=10, **data) -> dict:
    root = tmp / "images"
    rng = np.random.default_rng(0)
    for name in classes:
        for i in range(per_class):
            png(root / name / f"{i}.png", rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    return {
        "data": {"source": "imagefolder", "path": str(root), **data},
        "preprocess": [{"op": "to_float"}],
        "model": {"name": "small_cnn", "input": [8, 8, 3], "num_classes": len(classes)},
        "train": {"batch_size": 4},
    }


# --- config values: type, finiteness, range, before anything runs ---------------------------


def sequential(**layer) -> dict:
    layers = [layer, {"type": "gap"}, {"type": "dense", "features": 10}]
    return digits(model={"name": "sequential", "layers": layers})


@pytest.mark.parametrize(
    "layer, key",
    [
        ({"type": "conv", "features": 8, "kernel": 0}, "kernel"),
        ({"type": "conv", "features": 8, "stride": 0}, "stride"),
        ({"type": "conv", "features": 0}, "features"),
        ({"type": "maxpool", "window": 0}, "window"),
        ({"type": "conv", "features": 2**63}, "features"),
    ],
)
def test_zero_or_huge_layer_sizes_are_config_values(layer, key, tmp_path, capsys):
    exit_code, result = check(capsys, tmp_path, sequential(**layer))
    assert exit_code == EXIT_INVALID
    diagnostic = only(result, "config.value")
    assert f"{key} must be an int in [1, 65536]" in diagnostic["message"]
    assert diagnostic["hint"] in (
        f"set {key} to an int in [1, 65536]",
        f"{key} = 3 in [model] layers[0] (conv) (the default)",
        f"{key} = 1 in [model] layers[0] (conv) (the default)",
        f"{key} = 2 in [model] layers[0] (maxpool) (the default)",
    )


@pytest.mark.parametrize(
    "table, key, value, expected",
    [
        ("train", "learning_rate", math.inf, "a number > 0 (finite: |x| <= 3.4e38"),
        ("train", "learning_rate", 10**400, "a number > 0 (finite: |x| <= 3.4e38"),
        ("train", "label_smoothing", math.nan, "a number in [0, 1) (finite: |x| <= 3.4e38"),
        ("train", "epochs", True, "an int in [1, 1000000]"),
        ("train", "batch_size", 2**40, "an int in [1, 1048576]"),
        (None, "seed", 2**32, "an int in [0, 2**32)"),
        (None, "seed", -1, "an int in [0, 2**32)"),
        (None, "name", "../../etc", "a plain name"),
        ("model", "num_classes", 2**31, "an int in [2, 100000]"),
        ("model", "input", [100_000, 100_000, 3], "height * width <= 89478485"),
        ("model", "input", [8, 8, True], "[height, width, channels]"),
    ],
)
def test_config_values_are_checked_for_type_finiteness_and_range(
    table, key, value, expected, tmp_path, capsys
):
    config = digits()
    (config[table] if table else config)[key] = value
    exit_code, result = check(capsys, tmp_path, config)
    assert exit_code == EXIT_INVALID
    (diagnostic,) = result["diagnostics"]  # the seed is no longer "data.too_few"
    assert diagnostic["code"] == "config.value"
    assert expected in diagnostic["expected"] and f"{key} = " in diagnostic["hint"]


@pytest.mark.parametrize("mean", [math.nan, 1e308])
def test_a_nan_or_a_float32_overflow_in_a_stage_list_is_a_config_value(mean, tmp_path, capsys):
    config = digits()
    config["preprocess"].append({"op": "normalize", "mean": [mean], "std": [0.5]})
    _, result = check(capsys, tmp_path, config)
    diagnostic = only(result, "config.value")
    assert diagnostic["expected"] == "a list of float (finite: |x| <= 3.4e38, float32's range)"
    assert diagnostic["hint"] == f"set mean to {diagnostic['expected']}"


def test_a_config_that_is_not_utf8_is_config_syntax(tmp_path, capsys):
    exit_code, result = check(capsys, tmp_path, b'name = "caf\xe9"\n')
    assert exit_code == EXIT_INVALID
    (diagnostic,) = result["diagnostics"]
    assert diagnostic["code"] == "config.syntax"
    assert diagnostic["hint"] == "save the config as UTF-8"


def test_preprocess_of_numbers_is_a_config_value(tmp_path, capsys):
    _, result = check(capsys, tmp_path, "preprocess = [1, 2]\n")
    (diagnostic,) = result["diagnostics"]
    assert diagnostic["code"] == "config.value"
    assert diagnostic["hint"] == '[[preprocess]]\nop = "to_float"'


def test_an_rngs_key_in_a_layer_is_an_unknown_key(tmp_path, capsys):
    _, result = check(capsys, tmp_path, sequential(type="conv", features=8, rngs=0))
    (diagnostic,) = result["diagnostics"]
    assert (diagnostic["code"], diagnostic["got"]) == ("config.unknown_key", "rngs")
    assert "valid keys: activation, features, kernel" in diagnostic["hint"]


@pytest.mark.parametrize("depth", [300, 600, 100_000])
def test_deep_nesting_is_a_diagnostic(depth, tmp_path, capsys):
    text = "[model]\ninput = " + "[" * depth + "]" * depth + "\n"
    exit_code, result = check(capsys, tmp_path, text)
    assert exit_code == EXIT_INVALID
    (diagnostic,) = result["diagnostics"]
    if depth < 500:  # parsed: then refused as a value
        assert diagnostic["code"] == "config.value"
        assert diagnostic["hint"].startswith("input = [8, 8, 1] under [model]")
    else:  # past what the TOML parser follows
        assert diagnostic["code"] == "config.syntax"
        assert "nested too deeply" in diagnostic["message"]
        assert diagnostic["hint"].startswith("no config value nests more than two levels")


@pytest.mark.parametrize("source", [["digits"], {"a": 1}, 7])
def test_a_list_or_table_where_a_name_belongs_is_a_diagnostic(source, tmp_path, capsys):
    exit_code, result = check(capsys, tmp_path, digits(data={"source": source}))
    assert exit_code == EXIT_INVALID
    (diagnostic,) = result["diagnostics"]
    assert diagnostic["code"] == "config.unknown_name"
    assert diagnostic["hint"].startswith("source = one of:")


def test_an_empty_data_path_is_a_config_value(tmp_path, capsys):
    _, result = check(capsys, tmp_path, digits(data={"source": "npz", "path": ""}))
    (diagnostic,) = result["diagnostics"]
    assert diagnostic["code"] == "config.value"
    assert diagnostic["hint"] == "set path to a path to the data (not empty, no NUL)"


def test_a_decode_size_past_the_pixel_limit_is_a_config_value(tmp_path, capsys):
    config = folder(tmp_path, size=[100_000, 100_000])
    _, result = check(capsys, tmp_path, config)
    (diagnostic,) = result["diagnostics"]
    assert diagnostic["code"] == "config.value"
    assert "at most 89,478,485 pixels" in diagnostic["hint"]


def test_huge_synthetic_data_is_refused_before_it_is_generated(tmp_path, capsys):
    config = digits(data={"source": "synthetic", "num_samples": 10**7})
    config["preprocess"] = []
    _, result = check(capsys, tmp_path, config)
    assert only(result, "config.value")["expected"] == "an int in [1, 1,000,000]"
    config["data"]["num_samples"] = 1_000_000
    config["model"]["input"] = [512, 512, 3]  # 3 TB of float32
    exit_code, result = check(capsys, tmp_path, config)
    assert exit_code == EXIT_INVALID
    (diagnostic,) = result["diagnostics"]
    assert (diagnostic["code"], diagnostic["stage"]) == ("memory.host", "[data]")
    suggested = int(diagnostic["hint"].split("num_samples = ")[1].split()[0])
    assert 1 <= suggested < 1_000_000


def test_more_steps_than_the_step_counter_holds_is_a_config_value(tmp_path, capsys):
    config = digits(
        data={"source": "synthetic", "num_samples": 1_000_000},
        train={"batch_size": 1, "epochs": 10_000},
    )
    config["preprocess"] = []
    _, result = check(capsys, tmp_path, config)
    diagnostic = only(result, "config.value")
    assert "more steps than a run counts" in diagnostic["message"]
    assert diagnostic["hint"] == f"epochs = {(2**31 - 1) // 700_000} under [train]"


def test_batches_past_host_memory_are_refused_with_a_batch_size(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("typedpipe.pipeline.check.static.budget", lambda: 2**10)
    _, result = check(capsys, tmp_path, digits())
    diagnostic = only(result, "memory.host")
    assert diagnostic["stage"] == "[train]"
    assert diagnostic["hint"].startswith("batch_size = 4 under [train]")


def test_out_empty_is_a_usage_error(capsys):
    assert main(["train", "--out", "", "--json"]) == EXIT_USAGE
    assert "--out" in capsys.readouterr().err


# --- npz: bounds before inflating, labels before sizing ---------------------------------------


def npz_config(path: Path, **model) -> dict:
    return {
        "data": {"source": "npz", "path": str(path)},
        "preprocess": [{"op": "to_float"}],
        "model": {"input": [8, 8, 1], "num_classes": 3, **model},
        "train": {"batch_size": 4},
    }


def test_a_label_of_2_to_the_31_is_refused_before_classes_are_sized(tmp_path, capsys):
    labels = np.arange(30) % 3
    labels[7] = 2**31 - 1
    np.savez(tmp_path / "d.npz", images=np.zeros((30, 8, 8), np.uint8), labels=labels)
    exit_code, result = check(capsys, tmp_path, npz_config(tmp_path / "d.npz"))
    assert exit_code == EXIT_INVALID
    (diagnostic,) = result["diagnostics"]
    assert (diagnostic["code"], diagnostic["items"]) == ("labels.range", ["#7"])
    assert "np.unique(labels, return_inverse=True)" in diagnostic["hint"]


def test_a_zip_bomb_is_refused_from_its_directory(tmp_path, capsys):
    """65 MiB of zeros in a 66 KiB member: refused without inflating it."""
    path = tmp_path / "bomb.npz"
    np.savez_compressed(path, images=np.zeros((1040, 256, 256), np.uint8), labels=np.zeros(1040))
    exit_code, result = check(capsys, tmp_path, npz_config(path))
    assert exit_code == EXIT_INVALID
    (diagnostic,) = result["diagnostics"]
    assert diagnostic["code"] == "data.too_large"
    assert "zip bomb" in diagnostic["message"]
    assert "np.savez, not np.savez_compressed" in diagnostic["hint"]


def _forged_member(path: Path, shape: tuple[int, ...], dtype: str, data: bytes) -> None:
    """An npz whose images.npy header declares `shape` but holds only `data`."""
    header = {"descr": np.dtype(dtype).str, "fortran_order": False, "shape": shape}
    buffer = __import__("io").BytesIO()
    np.lib.format.write_array_header_1_0(buffer, header)
    labels = __import__("io").BytesIO()
    np.lib.format.write_array(labels, np.zeros(2, np.int64))
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("images.npy", buffer.getvalue() + data)
        archive.writestr("labels.npy", labels.getvalue())


def test_an_npy_header_that_declares_more_than_it_holds_is_corrupt(tmp_path, capsys):
    _forged_member(tmp_path / "d.npz", (10**6, 4096, 4096), "<f4", b"\0" * 64)
    _, result = check(capsys, tmp_path, npz_config(tmp_path / "d.npz"))
    (diagnostic,) = result["diagnostics"]
    assert diagnostic["code"] == "data.corrupt"
    assert "declares 67,108,864,000,000 bytes" in diagnostic["message"]


def test_an_npz_of_python_objects_is_never_unpickled(tmp_path, capsys):
    _forged_member(tmp_path / "d.npz", (2,), "|O", b"\x80\x04N.")
    _, result = check(capsys, tmp_path, npz_config(tmp_path / "d.npz"))
    (diagnostic,) = result["diagnostics"]
    assert diagnostic["code"] == "data.corrupt" and "never loaded" in diagnostic["message"]


def test_an_npz_larger_than_host_memory_is_refused_before_loading(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("typedpipe.pipeline.sources.npz.budget", lambda: 2**10)
    np.savez(tmp_path / "d.npz", images=np.zeros((30, 8, 8), np.uint8), labels=np.arange(30) % 3)
    _, result = check(capsys, tmp_path, npz_config(tmp_path / "d.npz"))
    (diagnostic,) = result["diagnostics"]
    assert diagnostic["code"] == "memory.host"
    assert 'source = "imagefolder"' in diagnostic["hint"]


# --- image folders: pixels kept small, nothing lost or skipped in silence ----------------------


def test_the_decoded_sample_is_not_kept_in_memory(tmp_path):
    """30 images of 1500x1500 RGB (200 MB decoded): the survey holds one at a time."""
    root = tmp_path / "big"
    flat = np.zeros((1500, 1500, 3), np.uint8)
    for i in range(30):
        png(root / f"class{i % 2}" / f"{i}.png", flat)
    config = tp.parse_config(f'[data]\nsource = "imagefolder"\npath = "{root}"\n')
    tracemalloc.start()
    try:
        survey = config.source().survey()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert survey.spec is not None and survey.spec.shape == (1500, 1500, 3)
    assert peak < 60 * 2**20, f"the survey peaked at {peak / 2**20:.0f} MiB"


def test_16_bit_gray_keeps_its_range_as_uint16(tmp_path, capsys):
    root = tmp_path / "images"
    ramp = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000).astype(np.uint16)
    for label in range(2):
        for i in range(8):
            png(root / f"c{label}" / f"{i}.png", ramp + i)
    config = {
        "data": {"source": "imagefolder", "path": str(root), "mode": "gray"},
        "preprocess": [{"op": "to_float", "scale": 1 / 65535}],
        "model": {"input": [8, 8, 1], "num_classes": 2},
        "train": {"batch_size": 4},
    }
    exit_code, result = check(capsys, tmp_path, config)
    assert (exit_code, result) == (EXIT_OK, {"ok": True, "diagnostics": []})
    pixels = decode(root / "c0" / "0.png", "gray", None)
    assert pixels.dtype == np.uint16 and int(pixels.max()) == 63_000  # not 255
    config["data"]["mode"] = "rgb"  # would saturate: refused, with the fix
    exit_code, result = check(capsys, tmp_path, config)
    assert exit_code == EXIT_INVALID
    diagnostic = only(result, "data.lossy")
    assert diagnostic["severity"] == "error" and diagnostic["got"] == "I;16"
    assert diagnostic["hint"].startswith('decode them as stored: mode = "gray"')


def test_a_setting_that_drops_transparency_is_a_warning(tmp_path, capsys):
    config = folder(tmp_path, mode="rgb")
    rgba = np.full((8, 8, 4), 128, np.uint8)
    png(Path(config["data"]["path"]) / "class1" / "alpha.png", rgba)
    exit_code, result = check(capsys, tmp_path, config)
    assert (exit_code, result["ok"]) == (EXIT_OK, True)
    (warning,) = result["diagnostics"]
    assert (warning["code"], warning["severity"]) == ("data.lossy", "warning")
    assert warning["items"] == ["class1/alpha.png (RGBA: transparency)"]
    assert 'mode = "keep"' in warning["hint"]


def test_exif_orientation_is_applied_as_exif_transpose_does(tmp_path, capsys):
    from PIL import ImageOps

    root = tmp_path / "photos"
    exif = Image.Exif()
    exif[0x0112] = 6  # a phone held upright: stored sideways
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :10] = 255  # a white band on the left, as stored
    for label in range(2):
        for i in range(6):
            path = root / f"c{label}" / f"{i}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(path, exif=exif.tobytes(), quality=95)
    upright = decode(root / "c0" / "0.jpg", "keep", None)
    with Image.open(root / "c0" / "0.jpg") as image:
        np.testing.assert_array_equal(upright, np.asarray(ImageOps.exif_transpose(image)))
    assert upright.shape == (40, 20, 3) and upright[:10].mean() > 200  # the band is on top
    config = {
        "data": {"source": "imagefolder", "path": str(root)},
        "preprocess": [{"op": "to_float"}],
        "model": {"input": [40, 20, 3], "num_classes": 2},
        "train": {"batch_size": 2},
    }
    exit_code, result = check(capsys, tmp_path, config)  # the header's size is turned too
    assert (exit_code, result) == (EXIT_OK, {"ok": True, "diagnostics": []})


def test_escape_sequences_in_class_names_never_reach_the_terminal(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")  # one line per item: the name is not folded
    config = folder(tmp_path, classes=("cat", "dog"))
    evil = Path(config["data"]["path"]) / "evil\x1b[2J\x1b]0;pwned\x07\u202e"
    evil.mkdir()
    config["model"]["num_classes"] = 3
    path = tmp_path / "config.toml"
    path.write_text(tomli_w.dumps(config))
    assert main(["check", str(path)]) == EXIT_INVALID
    captured = capsys.readouterr()
    shown = captured.out + captured.err
    assert "\x1b" not in shown and "\x07" not in shown and "\u202e" not in shown
    assert "evil\\x1b[2J\\x1b]0;pwned\\x07\\u202e" in shown  # data.empty names it, visibly


def test_an_unreadable_class_folder_is_a_permission_fault_not_empty(tmp_path, capsys, monkeypatch):
    config = folder(tmp_path)
    locked = Path(config["data"]["path"]) / "class1"
    locked.chmod(0)
    if os.geteuid() == 0:  # root reads anything: deny the listing as the kernel would
        listing = os.scandir

        def scandir(path="."):
            if Path(path) == locked:
                raise PermissionError(13, "Permission denied", str(path))
            return listing(path)

        monkeypatch.setattr(os, "scandir", scandir)
    try:
        exit_code, result = check(capsys, tmp_path, config)
    finally:
        locked.chmod(0o755)
    assert exit_code == EXIT_INVALID
    assert [d["code"] for d in result["diagnostics"]] == ["data.permission"]
    (diagnostic,) = result["diagnostics"]
    assert diagnostic["items"] == ["class1: cannot be listed: Permission denied"]
    assert "chmod" in diagnostic["hint"]


def test_an_unreadable_file_is_a_permission_fault(tmp_path, capsys, monkeypatch):
    config = folder(tmp_path)
    locked = Path(config["data"]["path"]) / "class2" / "0.png"
    opener = builtins.open

    def deny(file, *args, **kwargs):
        if isinstance(file, str | Path) and Path(file) == locked:
            raise PermissionError(13, "Permission denied", str(file))
        return opener(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", deny)
    _, result = check(capsys, tmp_path, config)
    (diagnostic,) = result["diagnostics"]
    assert diagnostic["code"] == "data.permission"
    assert diagnostic["items"] == ["class2/0.png: PermissionError: Permission denied"]


def test_links_and_odd_files_get_their_own_diagnostics(tmp_path, capsys):
    config = folder(tmp_path)
    root = Path(config["data"]["path"])
    (root / "class0" / "gone.png").symlink_to(root / "nowhere.png")
    (root / "class0" / "a.png").symlink_to(root / "class0" / "b.png")
    (root / "class0" / "b.png").symlink_to(root / "class0" / "a.png")
    (root / "class1" / "up").symlink_to(root / "class1")
    (root / "class1" / "fine.png").symlink_to(root / "class2" / "0.png")  # followed, no fault
    os.mkfifo(root / "class2" / "pipe.png")
    exit_code, result = check(capsys, tmp_path, config)
    assert exit_code == EXIT_INVALID
    by_code = {d["code"]: d for d in result["diagnostics"]}
    assert sorted(by_code) == ["data.link", "data.special"]
    assert sorted(by_code["data.link"]["items"]) == [
        "class0/a.png: a link that loops",
        "class0/b.png: a link that loops",
        "class0/gone.png: a link that points at nothing",
        "class1/up: links back to a folder above it",
    ]
    assert by_code["data.link"]["hint"] == "restore the link targets, or remove the links"
    assert by_code["data.special"]["items"] == ["class2/pipe.png: not a regular file (a FIFO)"]


# --- predict and bundles: the same limits, text made visible ---------------------------------

CLASS_NAMES = ("cat\x1b[2J", "dog\u202e", "plain")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    """An (untrained) exported model for 8x8 gray uint8 images, its class names hostile."""
    from flax import nnx

    from typedpipe.models import split_params
    from typedpipe.pipeline.export import export_model

    run = tmp_path_factory.mktemp("bundle") / "run"
    layers = [{"type": "conv", "features": 4}, {"type": "gap"}, {"type": "dense", "features": 3}]
    model = {"name": "sequential", "input": [8, 8, 1], "num_classes": 3, "layers": layers}
    config = tp.parse_config(tomli_w.dumps({"preprocess": [{"op": "to_float"}], "model": model}))
    m = config.model
    model = tp.build_model(m.name, m.input, m.num_classes, m.layers, rngs=nnx.Rngs(0))
    _, params, rest = split_params(model)
    spec = tp.ImageSpec(8, 8, 1, "uint8", (0.0, 255.0))
    export_model(run / "model", config, params, rest, spec, CLASS_NAMES, platforms=("cpu",))
    return run


def test_predict_shows_class_names_with_their_escapes_visible(
    bundle, tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("COLUMNS", "400")
    image = png(tmp_path / "x.png", np.zeros((8, 8), np.uint8))
    assert main(["predict", str(bundle), str(image)]) == EXIT_OK
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\u202e" not in out
    assert any(visible in out for visible in ("cat\\x1b[2J", "dog\\u202e", "plain"))


def test_predict_refuses_a_pixel_bomb_that_check_refuses(bundle, tmp_path, capsys):
    bomb = png_header(tmp_path / "bomb.png", 12_000, 12_000)  # 144 megapixels
    fine = png(tmp_path / "fine.png", np.zeros((8, 8), np.uint8))
    with pytest.raises(TooLarge):
        decode(bomb, "gray", (8, 8))
    code = main(["predict", str(bundle), str(bomb), str(fine), "--json"])
    result = _strict(capsys.readouterr().out)
    assert code == EXIT_INVALID
    assert [p["file"] for p in result["predictions"]] == [str(fine)]
    (diagnostic,) = result["diagnostics"]
    assert diagnostic["code"] == "data.too_large" and diagnostic["items"] == [str(bomb)]
    assert diagnostic["hint"] == "shrink the image with a trusted tool first"


@pytest.mark.parametrize(
    "field, value, fault",
    [
        ("input", {"height": 30_000, "width": 30_000}, "more than 89,478,485 pixels"),
        ("input", {"dtype": "object"}, "input: input dtype must be"),
        ("class_names", ["a"], "class_names: 1 names for 3 classes"),
        ("class_names", [1, 2, 3], "class_names: not a list of names"),
        ("config", {"x": 1}, "config: not the TOML text of a config"),
        ("config", '[model]\nnum_classes = 3\ninput = [8, 8, 1]\n[train]\nepochs = inf\n',
         "epochs must be"),
        ("artifact", None, "artifact.platforms: not a list"),
    ],
)  # fmt: skip
def test_a_crafted_contract_is_refused_not_obeyed(bundle, tmp_path, capsys, field, value, fault):
    crafted = tmp_path / "run"
    shutil.copytree(bundle, crafted)
    contract_path = crafted / "model" / "contract.json"
    contract = json.loads(contract_path.read_text())
    if isinstance(value, dict) and isinstance(contract[field], dict):
        contract[field] = {**contract[field], **value}
    else:
        contract[field] = value
    contract_path.write_text(json.dumps(contract))
    image = png(tmp_path / "x.png", np.zeros((8, 8), np.uint8))
    code = main(["predict", str(crafted), str(image), "--json"])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    (diagnostic,) = _strict(captured.out)["diagnostics"]
    assert code == EXIT_INVALID and diagnostic["code"] == "bundle.corrupt"
    assert any(fault in item for item in diagnostic["items"]), diagnostic["items"]
    assert diagnostic["hint"].startswith("train the run again")


def test_predict_names_fifos_and_dangling_links_in_a_folder(bundle, tmp_path, capsys):
    photos = tmp_path / "photos"
    png(photos / "ok.png", np.zeros((8, 8), np.uint8))
    (photos / "gone.png").symlink_to(photos / "nowhere.png")
    os.mkfifo(photos / "pipe.png")
    code = main(["predict", str(bundle), str(photos), str(photos / "pipe.png"), "--json"])
    result = _strict(capsys.readouterr().out)
    assert code == EXIT_INVALID
    assert [p["file"] for p in result["predictions"]] == [str(photos / "ok.png")]
    assert sorted(d["code"] for d in result["diagnostics"]) == [
        "data.link",
        "data.special",
        "data.special",
    ]


# --- the fuzz: a few hundred mutations of the shipped configs ---------------------------------

HOSTILE = [
    0, -1, 1, 2, 3, 2**31 - 1, 2**31, 2**32, 2**63 - 1, -(2**63), 10**6, 10**9,
    math.nan, math.inf, -math.inf, -0.0, 1e308, 5e-324, 0.5, 1e-12, True, False,
    "", "x" * 5000, "\x1b[31mred\x1b[0m", "../../etc/passwd", "\u202e", "nan", "float32",
    "same", "relu", [], [1, 2], [math.nan], [[]], [0, 0], [1, 1, 1], [8, 8, 1], [-1, 5],
    [1e308, 1e308], [2**62, 2**62, 3], [True, False], {}, {"a": 1}, {"type": "conv"},
    datetime.date(2020, 1, 1), datetime.time(1, 2),
]  # fmt: skip
LAYERS = [
    {"type": "conv", "features": 8, "kernel": 3, "stride": 1, "padding": "same"},
    {"type": "maxpool", "window": 2},
    {"type": "avgpool", "window": 2, "stride": 1},
    {"type": "batchnorm", "momentum": 0.9},
    {"type": "dropout", "rate": 0.1},
    {"type": "residual", "features": 8, "stride": 1},
    {"type": "flatten"},
    {"type": "dense", "features": 10, "activation": "relu"},
]
STAGES = [
    {"op": "to_float", "scale": 0.1},
    {"op": "normalize", "mean": [0.5], "std": [0.5]},
    {"op": "resize", "height": 8, "width": 8},
    {"op": "center_crop", "height": 4, "width": 4},
    {"op": "random_crop", "height": 8, "width": 8, "padding": 1},
    {"op": "random_flip", "horizontal": True},
    {"op": "to_rgb"},
    {"op": "to_gray"},
]
KEYS = ["rngs", "name", "op", "type", "learnig_rate", "in_features", "__class__", "size", "path"]
DATA_KEYS = ["mode", "size", "layout", "num_samples", "labels", "path"]


def _leaves(node, prefix=()):
    """The path of every table, list and value under `node`."""
    found = [prefix] if prefix else []
    if isinstance(node, dict | list):
        for key, child in node.items() if isinstance(node, dict) else enumerate(node):
            found += _leaves(child, (*prefix, key))
    return found


def _parent(root, path):
    for key in path[:-1]:
        root = root[key]
    return root


def _mutate(tree: dict, rng: random.Random, paths: list[str]) -> dict:
    """One structural mutation: a hostile value, a deleted or unknown key, odd layers,
    stages or data."""
    tree = copy.deepcopy(tree)
    kind = rng.choice(["value"] * 4 + ["delete", "unknown", "layers", "stages", "data", "table"])
    leaves = _leaves(tree)
    hostile = copy.deepcopy(rng.choice(HOSTILE))
    if kind == "value" and leaves:
        path = rng.choice(leaves)
        _parent(tree, path)[path[-1]] = hostile
    elif kind == "delete" and leaves:
        path = rng.choice(leaves)
        del _parent(tree, path)[path[-1]]
    elif kind == "unknown":
        tables = [t for t in tree.values() if isinstance(t, dict)]
        target = rng.choice(tables) if tables and rng.random() < 0.7 else tree
        target[rng.choice(KEYS)] = hostile
    elif kind == "layers" and isinstance(tree.get("model"), dict):
        layers = [copy.deepcopy(rng.choice(LAYERS)) for _ in range(rng.randint(1, 3))]
        victim = rng.choice(layers)
        victim[rng.choice([*victim, rng.choice(KEYS)])] = hostile
        tree["model"]["name"] = "sequential"
        tree["model"]["layers"] = [*layers, {"type": "gap"}, {"type": "dense", "features": 10}]
    elif kind == "stages":
        stages = [copy.deepcopy(rng.choice(STAGES)) for _ in range(rng.randint(1, 3))]
        victim = rng.choice(stages)
        victim[rng.choice([*victim, rng.choice(KEYS)])] = hostile
        tree["preprocess"] = stages
    elif kind == "data" and isinstance(tree.get("data"), dict):
        tree["data"]["source"] = rng.choice(["npz", "imagefolder", "synthetic", "digits"])
        tree["data"]["path"] = rng.choice(paths)
        if rng.random() < 0.5:
            odd = ["gray", "rgb", "keep", "nchw", [64, 64], [6000, 6000], "onehot", hostile]
            tree["data"][rng.choice(DATA_KEYS)] = copy.deepcopy(rng.choice(odd))
    elif kind == "table":
        tree[rng.choice(["data", "model", "train", "preprocess"])] = hostile
    return tree


def _mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    """One textual mutation: flipped or cut bytes, Latin-1, deep nesting, a BOM, a NUL."""
    kind = rng.choice(["flip", "cut", "latin1", "nest", "nest_table", "bom", "nul", "dup"])
    if kind == "flip" and data:
        at = rng.randrange(len(data))
        return data[:at] + bytes([rng.randrange(256)]) + data[at + 1 :]
    if kind == "cut":
        return data[: rng.randrange(len(data) + 1)]
    if kind == "latin1":
        return data + "\n# café\n".encode("latin-1")
    if kind == "nest":
        depth = rng.choice([100, 600, 5000])
        return data + b"\ndeep = " + b"[" * depth + b"]" * depth + b"\n"
    if kind == "nest_table":
        depth = rng.choice([100, 600, 5000])
        return b"deep = " + b"{a = " * depth + b"1" + b"}" * depth + b"\n" + data
    if kind == "bom":
        return b"\xef\xbb\xbf" + data
    if kind == "nul":
        return data + b"\x00"
    lines = data.splitlines(keepends=True)
    return data + rng.choice(lines) if lines else data


def mutations(count: int, seed: int, paths: list[str]):
    """`count` mutated configs (bytes), reproducible from `seed`."""
    rng = random.Random(seed)
    bases = [tomllib.loads(p.read_text()) for p in sorted(EXAMPLES.glob("*.toml"))]
    assert bases, f"no shipped configs in {EXAMPLES}"
    for _ in range(count):
        tree = _mutate(rng.choice(bases), rng, paths)
        for _ in range(rng.choice([0, 0, 1, 2])):
            tree = _mutate(tree, rng, paths)
        try:
            data = tomli_w.dumps(tree).encode()
        except (TypeError, ValueError):  # a mutation TOML cannot spell: the base as it is
            data = tomli_w.dumps(rng.choice(bases)).encode()
        yield _mutate_bytes(data, rng) if rng.random() < 0.3 else data


#: Mutations per run; TYPEDPIPE_FUZZ raises it for a longer probe (the count is the seed too).
FUZZ = int(os.environ.get("TYPEDPIPE_FUZZ", "300"))
#: Configs whose whole check, compiled train step included, is run; the rest stop short of
#: the compile (2 s each), which a valid mutation would otherwise spend.
FULL_CHECKS = int(os.environ.get("TYPEDPIPE_FUZZ_FULL", "4"))


def test_fuzzed_configs_never_crash_check(tmp_path, capsys, monkeypatch):
    import typedpipe.pipeline.check.static as static

    data = tmp_path / "data"
    (data / "folder" / "a").mkdir(parents=True)
    png(data / "folder" / "b" / "0.png", np.zeros((8, 8), np.uint8))
    np.savez(data / "ok.npz", images=np.zeros((40, 8, 8, 1), np.uint8), labels=np.arange(40) % 10)
    (data / "bad.npz").write_bytes(b"PK\x03\x04garbage")
    paths = [str(p) for p in (data / "ok.npz", data / "bad.npz", data / "folder", data)]
    paths += ["/dev/null", "", str(tmp_path / "nowhere")]
    full = {"left": FULL_CHECKS}
    real_step = static.check_step

    def step(*args, **kwargs):
        full["left"] -= 1
        return real_step(*args, **kwargs) if full["left"] >= 0 else []

    monkeypatch.setattr(static, "check_step", step)
    config, failures, exits = tmp_path / "fuzzed.toml", [], {EXIT_OK: 0, EXIT_INVALID: 0}
    for index, text in enumerate(mutations(FUZZ, FUZZ, paths)):
        config.write_bytes(text)
        code = main(["check", str(config), "--json"])
        captured = capsys.readouterr()
        try:
            result = _strict(captured.out)
            assert isinstance(result, dict) and isinstance(result["ok"], bool)
            assert code in exits and "Traceback" not in captured.err
            assert "internal error" not in captured.err
            exits[code] += 1
        except (AssertionError, ValueError, KeyError) as err:
            failures.append(
                f"#{index} exit {code}: {err!r} {captured.err[-300:]!r}\n{text[:400]!r}"
            )
    reached = FULL_CHECKS - full["left"]
    print(
        f"fuzz: {FUZZ} mutations, exit codes {exits}; {reached} reached the train step, "
        f"{min(reached, FULL_CHECKS)} of them traced and compiled"
    )
    assert not failures, f"{len(failures)} of {FUZZ}:\n" + "\n".join(failures[:5])
    assert exits[EXIT_OK] and exits[EXIT_INVALID]  # the mutations reach both answers
