import json

import numpy as np
import pytest

from typedpipe.cli import EXIT_INVALID, EXIT_OK, EXIT_USAGE, default_config_path, main


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
    assert result["diagnostics"][0]["hint"] == "did you mean 'epochs'?"


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


@pytest.mark.parametrize("name", ["digits.toml", "synthetic.toml"])
def test_every_shipped_example_passes_check(name, capsys):
    code, result = run_json(capsys, "check", str(default_config_path().parent / name))
    assert (code, result) == (EXIT_OK, {"ok": True, "diagnostics": []})


@pytest.mark.parametrize("command", ["check", "summary", "train", "bench"])
def test_an_empty_config_path_is_a_usage_error(command, capsys):
    assert main([command, ""]) == EXIT_USAGE
    assert "config path is empty" in capsys.readouterr().err
