"""The exported bundle: the jax.export artifact served alone, eval on other data, faults."""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import typedpipe as tp
from typedpipe.cli import EXIT_INVALID, EXIT_OK, main
from typedpipe.pipeline.config import default_config_path


def run_json(capsys, *argv):
    code = main([*argv, "--json"])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, json.loads(captured.out)  # stdout holds exactly one JSON object


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One one-epoch digits run, shared by every test here."""
    out = tmp_path_factory.mktemp("export") / "run"
    tp.train_run(tp.load_config(default_config_path()), out, epochs=1)
    return out


@pytest.fixture(scope="module")
def test_split(run):
    """The run's test split as stored: uint8 (n, 8, 8, 1) digits and their class ids."""
    from typedpipe.pipeline.sources import read_batch, split_indices

    config = tp.load_config(run / "config.toml")
    source = config.source()
    survey = source.survey()
    data = config.data
    indices = split_indices(survey.class_ids, data.val_fraction, data.test_fraction, config.seed)
    images, _ = read_batch(source.records(survey), indices.test)
    return images, survey.class_ids[indices.test]


def data_config(tmp_path, images, labels, name="other"):
    """A config whose [data] is an npz of `images` and `labels`."""
    np.savez(tmp_path / f"{name}.npz", images=images, labels=labels)
    path = tmp_path / f"{name}.toml"
    path.write_text(
        default_config_path()
        .read_text()
        .replace('source = "digits"', f'source = "npz"\npath = "{tmp_path / name}.npz"')
    )
    return path


SERVE = textwrap.dedent(
    """
    import json, sys
    import jax, numpy as np

    exported = jax.export.deserialize(bytearray(open(sys.argv[1], "rb").read()))
    images = np.load(sys.argv[2])
    out = {n: np.asarray(exported.call(images[:n])).tolist() for n in (1, 7, 64)}
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("typedpipe", "flax"))
    print(json.dumps({"probabilities": out, "loaded": loaded, "platforms": exported.platforms}))
    """
)


def test_the_artifact_alone_predicts_as_typedpipe_does_for_any_batch_size(
    run, test_split, tmp_path, capsys
):
    from PIL import Image

    images = test_split[0][:64]
    folder = tmp_path / "images"
    folder.mkdir()
    for i, image in enumerate(images):
        Image.fromarray(image[..., 0]).save(folder / f"{i:03d}.png")
    code, result = run_json(capsys, "predict", str(run), str(folder))
    assert code == EXIT_OK and result["diagnostics"] == []
    predictions = result["predictions"]
    assert [p["file"] for p in predictions] == [str(folder / f"{i:03d}.png") for i in range(64)]

    np.save(tmp_path / "images.npy", images)
    served = subprocess.run(
        [sys.executable, "-c", SERVE, str(run / "model" / "model.jaxexport"), "images.npy"],
        cwd=tmp_path,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert served.returncode == 0, served.stderr
    output = json.loads(served.stdout)
    assert output["loaded"] == []  # jax and numpy alone: neither typedpipe nor flax
    assert "cpu" in output["platforms"]
    for n, rows in output["probabilities"].items():
        probabilities = np.array(rows)
        assert probabilities.shape == (int(n), 10)
        for row, prediction in zip(probabilities, predictions, strict=False):
            assert int(row.argmax()) == prediction["class"]
            for entry in prediction["top"]:
                assert row[entry["class"]] == pytest.approx(entry["probability"], abs=1e-5)


def test_the_contract_states_layers_preprocessing_platforms_and_checksums(run):
    bundle = run / "model"
    contract = json.loads((bundle / "contract.json").read_text())
    assert contract["version"] == 3
    assert contract["artifacts"] == {"jaxexport": contract["artifact"]}
    assert contract["preprocess"] == [
        {
            "op": "to_float",
            "scale": 0.00392156862745098,
            "dtype": "float32",
            "augmentation": False,
            "output": "float32 b 8 8 1 in [0, 1]",
        }
    ]
    layers = contract["model"]["layers"]
    assert [layer["type"] for layer in layers][:2] == ["conv", "batchnorm"]
    conv = layers[0]
    assert (conv["name"], conv["features"], conv["kernel"], conv["padding"]) == (
        "conv0",
        32,
        3,
        "same",
    )
    assert conv["output"] == [8, 8, 32] and conv["params"] == 3 * 3 * 1 * 32 + 32
    assert layers[-1]["output"] == [10]
    assert contract["model"]["params"] == sum(layer["params"] for layer in layers)
    assert contract["artifact"]["input"] == {"shape": ["b", 8, 8, 1], "dtype": "uint8"}
    assert contract["artifact"]["output"] == {"shape": ["b", 10], "dtype": "float32"}
    assert "cpu" in contract["artifact"]["platforms"]
    weights = sorted(
        p.relative_to(bundle).as_posix() for p in (bundle / "weights").rglob("*") if p.is_file()
    )
    assert sorted(contract["files"]) == sorted(["model.jaxexport", *weights])
    assert not list(bundle.glob(".*.tmp"))  # no half-written file left


def test_eval_on_other_data_of_the_same_contract_gives_its_accuracy(
    run, test_split, tmp_path, capsys
):
    images, labels = test_split
    code, own = run_json(capsys, "eval", str(run))
    assert code == EXIT_OK and own["split"] == "test"
    # The test split again, as an npz of its own: the same images, so the same accuracy.
    config = data_config(tmp_path, images, labels)
    code, other = run_json(capsys, "eval", str(run), "--data", str(config))
    assert code == EXIT_OK
    assert other["split"] == "all" and other["images"] == len(labels) == own["images"]
    assert other["accuracy"] == pytest.approx(own["accuracy"], abs=1e-12)
    assert other["loss"] == pytest.approx(own["loss"], rel=1e-5)
    # Half of it: its own accuracy.
    model = tp.ExportedModel(run / "model")
    half = data_config(tmp_path, images[::2], labels[::2], name="half")
    code, result = run_json(capsys, "eval", str(run), "--data", str(half))
    expected = (model.predict(images[::2]).argmax(-1) == labels[::2]).mean()
    assert code == EXIT_OK and result["accuracy"] == pytest.approx(expected, abs=1e-12)


def test_eval_on_data_of_another_size_is_a_diagnostic(run, tmp_path, capsys):
    images = np.zeros((20, 16, 16, 1), np.uint8)
    config = data_config(tmp_path, images, np.arange(20) % 10)
    code, result = run_json(capsys, "eval", str(run), "--data", str(config))
    assert code == EXIT_INVALID and not result["ok"]
    [fault] = result["diagnostics"]
    assert fault["code"] == "shape.spatial"
    assert fault["expected"] == "uint8 b 8 8 1 in [0, 255]"
    assert fault["got"].startswith("uint8 b 16 16 1")
    assert main(["eval", str(run), "--data", str(tmp_path / "nope.toml")]) == 2


def flip_byte(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def largest_weights_file(bundle):
    return max((p for p in (bundle / "weights").rglob("*") if p.is_file()), key=os.path.getsize)


@pytest.mark.parametrize("fault", ["version", "weights", "artifact"])
def test_a_bundle_of_another_version_or_with_a_changed_byte_is_refused(
    run, tmp_path, capsys, fault
):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    bundle = copy / "model"
    if fault == "version":
        contract = json.loads((bundle / "contract.json").read_text())
        (bundle / "contract.json").write_text(json.dumps({**contract, "version": 99}))
        code, name = "bundle.version", None
    else:
        changed = largest_weights_file(bundle) if fault == "weights" else bundle / "model.jaxexport"
        flip_byte(changed)
        code, name = "bundle.corrupt", changed.relative_to(bundle).as_posix()
    with pytest.raises(tp.ContractError) as caught:
        tp.ExportedModel(bundle)
    assert caught.value.diagnostic.code == code
    if name:
        assert caught.value.diagnostic.items == (f"{name}: differs from its checksum",)
    else:
        assert "version 99" in caught.value.diagnostic.got
    exit_code, result = run_json(capsys, "eval", str(copy))
    assert exit_code == EXIT_INVALID
    assert [d["code"] for d in result["diagnostics"]] == [code]


def test_a_bundle_of_an_older_readable_version_still_loads(run, tmp_path):
    """Version 2 had one `artifact` and no `artifacts`: a newer typedpipe still reads it."""
    bundle = tmp_path / "model"
    shutil.copytree(run / "model", bundle)
    contract = json.loads((bundle / "contract.json").read_text())
    del contract["artifacts"]
    (bundle / "contract.json").write_text(json.dumps({**contract, "version": 2}))
    images = np.zeros((3, 8, 8, 1), np.uint8)
    np.testing.assert_array_equal(
        tp.ExportedModel(bundle).predict(images), tp.ExportedModel(run / "model").predict(images)
    )
    (bundle / "contract.json").write_text(json.dumps({**contract, "version": 1}))
    with pytest.raises(tp.ContractError) as caught:
        tp.ExportedModel(bundle)
    assert caught.value.diagnostic.code == "bundle.version"
    assert caught.value.diagnostic.expected == "format 'typedpipe.model' version 2 to 3"


def test_loading_the_bundle_leaves_its_checksums_true(run):
    tp.ExportedModel(run / "model")
    tp.ExportedModel(run / "model")  # a restore that touched a file would fail here
