"""`typedpipe init`: a folder of images to a config that passes check, and then trains."""

import io
import json

import numpy as np
import pytest
from PIL import Image

from typedpipe.cli import EXIT_INVALID, EXIT_OK, EXIT_USAGE, main
from typedpipe.contracts import ContractError
from typedpipe.pipeline.config import load_config
from typedpipe.pipeline.scaffold import MAX_SIDE, plain_name, scaffold_config

# (Pillow mode, format) and (height, width) the mixed folder cycles through.
_KINDS = [
    ("RGB", "PNG"),
    ("L", "PNG"),
    ("RGBA", "PNG"),
    ("P", "PNG"),
    ("RGB", "JPEG"),
    ("L", "JPEG"),
]
_SIZES = [(12, 12)] * 4 + [(17, 17), (10, 14)]


def _image(rng, mode: str, fmt: str, size) -> bytes:
    pixels = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(buffer, fmt)
    return buffer.getvalue()


def _mixed_folder(root, per_class: int = 200):
    """Three classes of small images in every size and colour mode of `_KINDS` and `_SIZES`."""
    rng = np.random.default_rng(0)
    for name in ("circle", "square", "triangle"):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            mode, fmt = _KINDS[i % len(_KINDS)]
            size = _SIZES[(i // len(_KINDS)) % len(_SIZES)]
            suffix = ".png" if fmt == "PNG" else ".jpg"
            (root / name / f"{i:03d}{suffix}").write_bytes(_image(rng, mode, fmt, size))


def _json(capsys, *argv):
    code = main([*argv, "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_init_then_check_names_only_the_truncated_file_and_train_runs_without_it(
    tmp_path, monkeypatch, capsys
):
    folder = tmp_path / "shapes"
    _mixed_folder(folder)
    jpeg = _image(np.random.default_rng(1), "RGB", "JPEG", (12, 12))
    cut = folder / "square" / "137-cut.jpg"  # far from the first and last files
    cut.write_bytes(jpeg[:-60])
    monkeypatch.chdir(tmp_path)

    assert main(["init", "shapes"]) == EXIT_INVALID  # the config is written; one file is bad
    printed = capsys.readouterr().out
    assert "600 images in 3 classes: circle (200), square (200), triangle (200)" in printed
    assert "sizes: 12x12 (420), 17x17 (90), 10x14 (90)" in printed
    assert "square/137-cut.jpg" in printed
    assert "next: fix what is reported above, then\n      typedpipe check shapes.toml" in printed
    text = (tmp_path / "shapes.toml").read_text()
    assert 'mode = "rgb"  # colour files present' in text
    assert 'drop = ["transparency"]' in text  # the RGBA and P files, said on purpose
    assert "size = [12, 12]  # the median height and width" in text
    assert "# sizes: 12x12 (420), 17x17 (90), 10x14 (90)" in text
    config = load_config(tmp_path / "shapes.toml")
    assert (config.model.name, config.model.input, config.model.num_classes) == (
        "small_cnn",
        (12, 12, 3),
        3,
    )

    code, result = _json(capsys, "check", "shapes.toml")
    assert code == EXIT_INVALID
    (corrupt,) = result["diagnostics"]
    assert (corrupt["code"], corrupt["items"], corrupt["total_items"]) == (
        "data.corrupt",
        ["square/137-cut.jpg"],
        1,
    )
    assert corrupt["hint"] == "remove or replace square/137-cut.jpg, then run typedpipe check again"

    cut.unlink()
    assert _json(capsys, "check", "shapes.toml") == (EXIT_OK, {"ok": True, "diagnostics": []})
    code, result = _json(capsys, "train", "shapes.toml", "--max-steps", "2", "--out", "run")
    assert code == EXIT_OK and result["metrics"]["steps"] == 2


def test_init_never_overwrites_a_file(tmp_path, monkeypatch, capsys):
    _mixed_folder(tmp_path / "shapes", per_class=4)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "shapes.toml").write_text("mine")
    assert main(["init", "shapes"]) == EXIT_USAGE
    assert (
        "shapes.toml exists and init never overwrites a file: name another with --out CONFIG"
        in (capsys.readouterr().err.replace("\n", " "))
    )
    assert (tmp_path / "shapes.toml").read_text() == "mine"
    assert main(["init", "shapes", "--out", "other.toml"]) == EXIT_OK
    assert load_config(tmp_path / "other.toml").data.path == "shapes"
    assert main(["init", "nowhere"]) == EXIT_USAGE
    assert "no such folder: nowhere" in capsys.readouterr().err


def test_init_on_an_empty_folder_is_a_diagnostic_and_writes_nothing(tmp_path, monkeypatch, capsys):
    (tmp_path / "empty").mkdir()
    monkeypatch.chdir(tmp_path)
    assert main(["init", "empty"]) == EXIT_INVALID
    err = capsys.readouterr().err
    assert "data.empty" in err and "empty has no class sub-folders" in err
    assert "Traceback" not in err
    assert not (tmp_path / "empty.toml").exists()


def test_init_on_one_class_says_a_classifier_needs_two(tmp_path):
    _mixed_folder(tmp_path / "shapes", per_class=3)
    for extra in ("square", "triangle"):
        for file in (tmp_path / "shapes" / extra).iterdir():
            file.unlink()
        (tmp_path / "shapes" / extra).rmdir()
    with pytest.raises(ContractError) as caught:
        scaffold_config(tmp_path / "shapes")
    diagnostic = caught.value.diagnostic
    assert diagnostic.code == "labels.count"
    assert diagnostic.message == (
        f"{tmp_path / 'shapes'} holds images of 1 class(es): a classifier needs at least 2"
    )
    assert diagnostic.got == "1 class folder(s) with images (circle)"
    assert diagnostic.hint.startswith("put each class's images in a sub-folder of its own")


def test_init_keeps_gray_files_gray_and_shrinks_large_ones_for_a_cpu(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        for i in range(3):  # too few per class for a validation part
            (tmp_path / name / f"{i}.png").write_bytes(_image(rng, "L", "PNG", (100, 80)))
    scaffold = scaffold_config(tmp_path)
    data = scaffold.config.data
    assert (data.mode, data.drop, data.size) == ("gray", (), (MAX_SIDE, 51))
    assert (data.val_fraction, data.test_fraction) == (0.0, 0.2)
    assert "test_fraction = 0.2  # the smallest class allows no more" in scaffold.text
    assert scaffold.config.model.input == (MAX_SIDE, 51, 1)
    assert scaffold.config.train.batch_size == 4  # no more than the training images
    assert scaffold.diagnostics == ()


def test_the_run_name_is_plain_whatever_the_folder_is_called():
    assert plain_name("data/My Flowers (2024)") == "My-Flowers-2024"
    assert plain_name("/") == "images"


def test_one_size_needs_no_resize(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        for i in range(5):
            (tmp_path / name / f"{i}.jpg").write_bytes(_image(rng, "RGB", "JPEG", (20, 24)))
    scaffold = scaffold_config(tmp_path)
    assert scaffold.config.data.size is None
    assert "# one size, 20x24: no resize" in scaffold.text
    assert scaffold.config.model.input == (20, 24, 3)


def _tensors_of(name, input_shape, num_classes, path):
    """A safetensors file with every tensor `name` needs (zeros), as a PyTorch state dict."""
    from flax import nnx
    from safetensors.numpy import save_file

    from typedpipe.models import build_model
    from typedpipe.models.weightplan import expected_tensors

    model = nnx.eval_shape(lambda: build_model(name, input_shape, num_classes, rngs=nnx.Rngs(0)))
    tensors = {n: np.zeros(shape, np.float32) for n, (shape, _) in expected_tensors(model).items()}
    save_file(tensors, str(path))
    return path


def test_init_with_weights_writes_a_fine_tuning_config_for_the_files_network(
    tmp_path, monkeypatch, capsys
):
    folder = tmp_path / "photos"
    _mixed_folder(folder, per_class=6)
    monkeypatch.chdir(tmp_path)
    weights = _tensors_of("resnet18", (224, 224, 3), 1000, tmp_path / "resnet18.safetensors")
    assert main(["init", "photos", "--weights", weights.name]) == EXIT_OK
    printed = capsys.readouterr().out
    assert "into resnet18 from resnet18.safetensors, 3 classes" in printed
    config = load_config(tmp_path / "photos.toml")
    m, t = config.model, config.train
    assert (m.name, m.input, m.num_classes, m.weights) == (
        "resnet18",
        (224, 224, 3),
        3,
        "resnet18.safetensors",
    )
    assert config.data.mode == "rgb" and config.data.size == (256, 256)
    ops = [stage.op for stage in config.preprocess]
    assert ops == [
        "to_float",
        "random_resized_crop",
        "random_flip",
        "rand_augment",
        "normalize",
        "random_erasing",
    ]
    assert (t.freeze_epochs, t.backbone_lr_mult, t.optimizer) == (1, 0.1, "adamw")
    # Each recipe setting says why, in the file itself.
    text = (tmp_path / "photos.toml").read_text()
    assert "# the new head alone first" in text and "# the statistics the pretrained" in text
    # The file's head has 1000 classes: check says the head is new, and nothing else.
    from typedpipe.pipeline.check.weights import check_weights

    assert [d.code for d in check_weights(config)] == ["weights.new_head"]


def test_init_with_weights_no_architecture_takes_is_a_diagnostic(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "photos"
    _mixed_folder(folder, per_class=6)
    monkeypatch.chdir(tmp_path)
    _tensors_of("lenet", (32, 32, 3), 10, tmp_path / "lenet.safetensors")  # not at 224 px
    code = main(["init", "photos", "--weights", "lenet.safetensors"])
    captured = capsys.readouterr()
    assert code == EXIT_INVALID and not (tmp_path / "photos.toml").exists()
    assert "weights.mismatch" in captured.err + captured.out
    assert "no registered architecture takes the tensors of lenet.safetensors" in (
        captured.err + captured.out
    )
    assert main(["init", "photos", "--weights", "nope.safetensors"]) == EXIT_USAGE
