import json

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
    config.write_text(config.read_text().replace('[[preprocess]]\nop = "to_float"\n'
                                                 "scale = 0.00392156862745098  # 1/255: uint8 "
                                                 "pixels onto [0, 1]\n", ""))
    code, result = run_json(capsys, "check", str(config))
    assert code == EXIT_INVALID
    assert sorted(d["code"] for d in result["diagnostics"]) == [
        "dtype.input", "shape.channels", "shape.spatial"]
    assert all(d["hint"] for d in result["diagnostics"])


def test_summary_names_the_layer_a_stride_collapses(tmp_path, capsys):
    conv = '{type = "conv", features = 8, kernel = 3, stride = 3, padding = "valid"}'
    config = write_config(tmp_path, 'name = "small_cnn"', f'name = "sequential"\nlayers = '
                          f'[{conv}, {conv}, {conv}, {{type = "flatten"}}, '
                          '{type = "dense", features = 10}]')
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
