"""Every diagnostic code `typedpipe check` can detect, through the command line.

Each case builds real broken data or config, runs `typedpipe check --json`, and
asserts the code, the stage and a hint; then builds the fixed version and
asserts that it passes with no diagnostic at all (no false positives).
"""

import json
import re
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tomli_w
from PIL import Image

from typedpipe.cli import EXIT_INVALID, EXIT_OK, main

SIZE = 16


def check(capsys, tmp_path: Path, config: dict | str) -> tuple[int, dict]:
    path = tmp_path / "config.toml"
    path.write_text(config if isinstance(config, str) else tomli_w.dumps(config))
    code = main(["check", str(path), "--json"])
    return code, json.loads(capsys.readouterr().out)


# --- data builders ---------------------------------------------------------------------------


def digits() -> dict:
    return {
        "data": {"source": "digits"},
        "preprocess": [{"op": "to_float"}],
        "model": {"name": "small_cnn", "input": [8, 8, 1], "num_classes": 10},
        "train": {"batch_size": 32},
    }


def npz(
    tmp: Path, images: np.ndarray | None = None, stored_labels: np.ndarray | None = None, **data
) -> dict:
    rng = np.random.default_rng(0)
    if images is None:
        images = rng.uniform(size=(60, SIZE, SIZE, 3)).astype(np.float32)
    if stored_labels is None:
        stored_labels = np.arange(60) % 3
    np.savez(tmp / "data.npz", images=images, labels=stored_labels)
    return {
        "data": {"source": "npz", "path": str(tmp / "data.npz"), **data},
        "model": {"name": "small_cnn", "input": [SIZE, SIZE, 3], "num_classes": 3},
        "train": {"batch_size": 8},
    }


def png(path: Path, size=(SIZE, SIZE), mode="RGB", seed=0) -> None:
    rng = np.random.default_rng(seed)
    shape = (*size, 3) if mode == "RGB" else size
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(path)


def pixel_bomb(path: Path, width=100_000, height=100_000) -> None:
    """A tiny, valid PNG whose header declares 10^10 pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def folder(tmp: Path, per_class=(10, 10, 10), num_classes=3, **data) -> dict:
    root = tmp / "images"
    for label, count in enumerate(per_class):
        (root / f"class{label}").mkdir(parents=True, exist_ok=True)
        for i in range(count):
            png(root / f"class{label}" / f"{i}.png", seed=label * 100 + i)
    return {
        "data": {"source": "imagefolder", "path": str(root), **data},
        "preprocess": [{"op": "to_float"}],
        "model": {"name": "small_cnn", "input": [SIZE, SIZE, 3], "num_classes": num_classes},
        "train": {"batch_size": 8},
    }


def with_(config: dict, table: str, **values) -> dict:
    config[table] = {**config.get(table, {}), **values}
    return config


# --- one case per code: (broken, tmp) -> config ----------------------------------------------


def config_syntax(broken, tmp):
    return '[data\nsource = "digits"\n' if broken else digits()


def config_unknown_key(broken, tmp):
    config = digits()
    if broken:
        config["train"] = {"batchsize": 32}
    return config


def config_value(broken, tmp):
    return with_(digits(), "train", batch_size="big" if broken else 32)


def config_unknown_op(broken, tmp):
    config = digits()
    config["preprocess"] = [{"op": "to_flaot" if broken else "to_float"}]
    return config


def config_unknown_model(broken, tmp):
    return with_(digits(), "model", name="resnet" if broken else "small_cnn")


def shape_spatial(broken, tmp):
    config = with_(digits(), "model", input=[16, 16, 1])
    if not broken:
        config["preprocess"].append({"op": "resize", "height": 16, "width": 16})
    return config


def shape_channels(broken, tmp):
    config = with_(digits(), "model", input=[8, 8, 3])
    if not broken:
        config["preprocess"].append({"op": "to_rgb"})
    return config


def shape_layout(broken, tmp):
    images = np.random.default_rng(0).uniform(size=(60, 3, SIZE, SIZE)).astype(np.float32)
    return npz(tmp, images, layout="nhwc" if broken else "nchw")


def shape_rank(broken, tmp):
    images = np.random.default_rng(0).uniform(size=(60, SIZE, SIZE, 3)).astype(np.float32)
    return npz(tmp, images[..., None] if broken else images)


def dtype_input(broken, tmp):
    config = digits()
    if broken:
        config["preprocess"] = []
    return config


def range_input(broken, tmp):
    config = digits()
    config["preprocess"] = [{"op": "to_float", "scale": 1.0 if broken else 1 / 255}]
    return config


def value_nonfinite(broken, tmp):
    images = np.random.default_rng(0).uniform(size=(60, SIZE, SIZE, 3)).astype(np.float32)
    if broken:
        images[7, 1, 2, 0] = np.nan
        images[31, 0, 0, 1] = np.inf
    return npz(tmp, images)


def labels_format(broken, tmp):
    onehot = np.eye(3, dtype=np.float32)[np.arange(60) % 3]
    return npz(tmp, stored_labels=onehot, labels="int" if broken else "onehot")


def labels_range(broken, tmp):
    return npz(tmp, stored_labels=np.arange(60) % 3 + (1 if broken else 0))


def labels_count(broken, tmp):
    return folder(tmp, num_classes=4 if broken else 3)


def model_shape(broken, tmp):
    conv = {
        "type": "conv",
        "features": 8,
        "kernel": 3,
        "stride": 3 if broken else 1,
        "padding": "valid",
    }
    return with_(
        digits(),
        "model",
        name="sequential",
        layers=[conv, conv, {"type": "flatten"}, {"type": "dense", "features": 10}],
    )


def data_empty(broken, tmp):
    return folder(tmp, per_class=(10, 10, 0 if broken else 10))


def data_corrupt(broken, tmp):
    config = folder(tmp)
    if broken:
        class0 = Path(config["data"]["path"]) / "class0"
        (class0 / "not-an-image.png").write_bytes(b"hello")
        whole = (class0 / "0.png").read_bytes()
        (class0 / "truncated.png").write_bytes(whole[: len(whole) // 2])
    return config


def data_too_large(broken, tmp):
    config = folder(tmp)
    if broken:
        pixel_bomb(Path(config["data"]["path"]) / "class1" / "bomb.png")
    return config


def data_size_mixed(broken, tmp):
    config = folder(tmp)
    png(Path(config["data"]["path"]) / "class2" / "odd.png", size=(12, SIZE))
    return config if broken else with_(config, "data", size=[SIZE, SIZE])


def data_mode_mixed(broken, tmp):
    config = folder(tmp)
    png(Path(config["data"]["path"]) / "class2" / "gray.png", mode="L")
    return config if broken else with_(config, "data", mode="rgb")


def data_mismatch(broken, tmp):
    return npz(tmp, stored_labels=np.arange(50 if broken else 60) % 3)


def data_too_few(broken, tmp):
    return folder(tmp, per_class=(10, 10, 1 if broken else 10))


def memory_exceeds(broken, tmp, batch_size=1024):
    # The data fits in host memory (1.2 GB); the step for a batch of 1024 does not.
    return {
        "data": {"source": "synthetic", "num_samples": 1500},
        "model": {"name": "small_cnn", "input": [256, 256, 3], "num_classes": 10},
        "train": {"batch_size": batch_size},
    }


CASES: dict[str, tuple[Callable, str]] = {
    "config.syntax": (config_syntax, "config.toml"),
    "config.unknown_key": (config_unknown_key, "[train]"),
    "config.value": (config_value, "[train]"),
    "config.unknown_op": (config_unknown_op, "preprocess"),
    "config.unknown_model": (config_unknown_model, "model"),
    "shape.spatial": (shape_spatial, "model"),
    "shape.channels": (shape_channels, "model"),
    "shape.layout": (shape_layout, "model"),
    "shape.rank": (shape_rank, "data"),
    "dtype.input": (dtype_input, "model"),
    "range.input": (range_input, "model"),
    "value.nonfinite": (value_nonfinite, "data"),
    "labels.format": (labels_format, "labels"),
    "labels.range": (labels_range, "labels"),
    "labels.count": (labels_count, "model"),
    "model.shape": (model_shape, "conv1"),
    "data.empty": (data_empty, "data"),
    "data.corrupt": (data_corrupt, "data"),
    "data.too_large": (data_too_large, "data"),
    "data.size_mixed": (data_size_mixed, "data"),
    "data.mode_mixed": (data_mode_mixed, "data"),
    "data.mismatch": (data_mismatch, "data"),
    "data.too_few": (data_too_few, "data"),
    "memory.exceeds": (memory_exceeds, "[train]"),
}


@pytest.mark.parametrize("code", CASES)
def test_check_reports_the_code_with_its_stage_and_a_fix(code, tmp_path, capsys):
    make, stage = CASES[code]
    exit_code, result = check(capsys, tmp_path, make(True, tmp_path))
    assert exit_code == EXIT_INVALID
    assert result["ok"] is False
    found = [d for d in result["diagnostics"] if d["code"] == code]
    assert found, f"no {code} among {[d['code'] for d in result['diagnostics']]}"
    assert found[0]["stage"] == stage
    assert found[0]["hint"].strip()
    assert found[0]["severity"] == "error"


@pytest.mark.parametrize("code", [c for c in CASES if c != "memory.exceeds"])
def test_the_fixed_pipeline_passes_with_no_diagnostic(code, tmp_path, capsys):
    make, _ = CASES[code]
    exit_code, result = check(capsys, tmp_path, make(False, tmp_path))
    assert result == {"ok": True, "diagnostics": []}
    assert exit_code == EXIT_OK


def test_the_items_name_the_offending_files_and_indices(tmp_path, capsys):
    _, result = check(capsys, tmp_path, data_corrupt(True, tmp_path))
    (corrupt,) = result["diagnostics"]
    assert sorted(item.split(":")[0] for item in corrupt["items"]) == [
        "class0/not-an-image.png",
        "class0/truncated.png",
    ]
    _, result = check(capsys, tmp_path, value_nonfinite(True, tmp_path))
    assert result["diagnostics"][0]["items"] == ["#7", "#31"]
    _, result = check(capsys, tmp_path, data_mode_mixed(True, tmp_path))
    assert result["diagnostics"][0]["items"] == ["class2/gray.png (L)"]
    assert result["diagnostics"][0]["hint"] == (
        'mode = "rgb" under [data] (the model takes 3 channels)'
    )


def test_memory_hint_names_a_batch_size_that_then_passes(tmp_path, capsys):
    _, result = check(capsys, tmp_path, memory_exceeds(True, tmp_path))
    (diagnostic,) = result["diagnostics"]
    assert "GiB" in diagnostic["message"]
    suggested = int(re.search(r"batch_size = (\d+)", diagnostic["hint"]).group(1))
    assert 1 <= suggested < 1024
    exit_code, result = check(capsys, tmp_path, memory_exceeds(False, tmp_path, suggested))
    assert result == {"ok": True, "diagnostics": []}
    assert exit_code == EXIT_OK


def test_every_fault_is_reported_in_one_run(tmp_path, capsys):
    config = folder(tmp_path, per_class=(10, 10, 10), num_classes=4)
    root = Path(config["data"]["path"])
    (root / "class0" / "junk.png").write_bytes(b"")
    png(root / "class1" / "gray.png", mode="L")
    pixel_bomb(root / "class2" / "bomb.png")
    _, result = check(capsys, tmp_path, config)
    assert sorted(d["code"] for d in result["diagnostics"]) == [
        "data.corrupt",
        "data.mode_mixed",
        "data.too_large",
        "labels.count",
    ]


def test_a_step_that_fails_to_trace_is_a_diagnostic_not_a_traceback(tmp_path, capsys):
    """A stage whose in_spec passes but whose call breaks XLA: the fallback code catches it."""
    import dataclasses
    from typing import ClassVar

    from typedpipe import STAGES, Stage

    @dataclasses.dataclass(frozen=True)
    class SquaresBatch(Stage):
        op: ClassVar[str] = "test_squares_batch"

        def in_spec(self, spec):
            return spec

        def __call__(self, images, key=None):
            return images @ images  # (b h w c) @ (b h w c): a dot_general shape error

    with STAGES.temporary("test_squares_batch", SquaresBatch):
        config = digits()
        config["preprocess"].append({"op": "test_squares_batch"})
        exit_code, result = check(capsys, tmp_path, config)
    assert exit_code == EXIT_INVALID
    (diagnostic,) = result["diagnostics"]
    assert (diagnostic["code"], diagnostic["stage"]) == ("step.trace", "train step")
    assert "TypeError" in diagnostic["message"] and diagnostic["hint"]


def _snapshot(root: Path) -> dict[str, tuple[int, int, bytes]]:
    return {
        str(p.relative_to(root)): (p.stat().st_mtime_ns, p.stat().st_size, p.read_bytes())
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize(
    "garbage",
    [
        b"",
        b"\x89PNG\r\n\x1a\n",
        b"\xff\xd8\xff\xe0" + b"\0" * 40,
        b"GIF89a",
        b"BM" + b"\xff" * 30,
        bytes(range(256)) * 4,
    ],
)
def test_garbage_files_never_crash_check_nor_change_the_folder(garbage, tmp_path, capsys):
    config = folder(tmp_path)
    root = Path(config["data"]["path"])
    for suffix in (".png", ".jpg", ".gif", ".bmp", ".webp", ".tiff"):
        (root / "class1" / f"garbage{suffix}").write_bytes(garbage)
    (root / "class2" / "a-folder.png").mkdir()
    (root / "class2" / "notes.txt").write_text("not an image, not counted")
    before = _snapshot(root)
    exit_code, result = check(capsys, tmp_path, config)
    assert exit_code == EXIT_INVALID
    (diagnostic,) = result["diagnostics"]
    assert diagnostic["code"] == "data.corrupt"
    assert len(diagnostic["items"]) == 6
    assert _snapshot(root) == before


@pytest.mark.parametrize(
    "images, stored_labels",
    [
        (np.array(["a", "b"]), np.array([0, 1])),
        (np.zeros((0, 8, 8, 1), np.uint8), np.zeros(0, np.int32)),
        (np.zeros((4, 8), np.float32), np.zeros(4, np.int32)),
        (np.zeros((4, 8, 8, 1), np.uint8), np.zeros((4, 2, 2), np.int32)),
        (np.zeros((4, 8, 8, 1), np.uint8), np.array([0.5, 1.0, 0.0, 1.0])),
    ],
)
def test_malformed_arrays_never_crash_check(images, stored_labels, tmp_path, capsys):
    np.savez(tmp_path / "data.npz", images=images, labels=stored_labels)
    exit_code, result = check(
        capsys,
        tmp_path,
        {
            "data": {"source": "npz", "path": str(tmp_path / "data.npz")},
            "model": {"input": [8, 8, 1], "num_classes": 2},
        },
    )
    assert exit_code == EXIT_INVALID
    assert result["diagnostics"] and all(d["hint"] for d in result["diagnostics"])


def test_a_missing_folder_or_loose_files_are_data_empty(tmp_path, capsys):
    config = folder(tmp_path)
    config["data"]["path"] = str(tmp_path / "nowhere")
    _, result = check(capsys, tmp_path, config)
    (missing,) = result["diagnostics"]
    assert missing["code"] == "data.empty" and "no folder at" in missing["message"]
    loose = tmp_path / "loose"
    loose.mkdir()
    png(loose / "a.png")
    config["data"]["path"] = str(loose)
    _, result = check(capsys, tmp_path, config)
    (flat,) = result["diagnostics"]
    assert flat["code"] == "data.empty" and flat["got"] == "1 loose files"
    assert "one sub-folder per class" in flat["hint"]


def test_values_near_1e30_are_out_of_the_model_range(tmp_path, capsys):
    """One of the faults Keras on JAX trains on silently."""
    images = np.random.default_rng(0).uniform(size=(60, SIZE, SIZE, 3)).astype(np.float32)
    _, result = check(capsys, tmp_path, npz(tmp_path, images * 1e30))
    (diagnostic,) = result["diagnostics"]
    assert (diagnostic["code"], diagnostic["stage"]) == ("range.input", "model")
    assert "input_range is [0, 1]" in diagnostic["message"]
    assert 'op = "normalize"' in diagnostic["hint"]


def test_nan_pixels_in_float_tiffs_are_found_by_the_sample_decode(tmp_path, capsys):
    root = tmp_path / "images"
    rng = np.random.default_rng(0)
    for label in range(3):
        (root / f"class{label}").mkdir(parents=True)
        for i in range(10):
            pixels = rng.uniform(size=(SIZE, SIZE)).astype(np.float32)
            if (label, i) == (1, 4):
                pixels[3, 3] = np.nan
            Image.fromarray(pixels, "F").save(root / f"class{label}" / f"{i}.tiff")
    config = {
        "data": {"source": "imagefolder", "path": str(root)},
        "model": {"name": "small_cnn", "input": [SIZE, SIZE, 1], "num_classes": 3},
        "train": {"batch_size": 8},
    }
    _, result = check(capsys, tmp_path, config)
    (diagnostic,) = result["diagnostics"]
    assert (diagnostic["code"], diagnostic["items"]) == ("value.nonfinite", ["class1/4.tiff"])
    (root / "class1" / "4.tiff").unlink()
    _, result = check(capsys, tmp_path, config)
    assert result == {"ok": True, "diagnostics": []}


def test_float64_images_get_a_warning_not_a_silent_narrowing(tmp_path, capsys):
    images = np.random.default_rng(0).uniform(size=(60, SIZE, SIZE, 3))  # float64
    exit_code, result = check(capsys, tmp_path, npz(tmp_path, images))
    assert (exit_code, result["ok"]) == (EXIT_OK, True)
    (warning,) = result["diagnostics"]
    assert (warning["code"], warning["severity"]) == ("dtype.input", "warning")
    assert (warning["expected"], warning["got"]) == ("float32", "float64")
    assert "jax_enable_x64" in warning["hint"]
