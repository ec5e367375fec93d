"""Every hint the catalog gives, applied as it reads: the fault goes, and no other error comes.

Each case writes a config with one fault (and the data it needs) into tmp_path,
runs the check a user runs (`check_draft(load_draft(path))`, what `typedpipe
check` calls), takes the hint of the faulty code, applies it to the TOML with
`apply_hint` (which knows only the written forms of a hint, listed in
`typedpipe.contracts.hints`), and checks again: the fault is gone, and no error
at all remains. A hint that is not a config edit (a file to repair, a command
to run) is held to naming the file or the action instead.
"""

import copy
import os
import re
import tomllib
from pathlib import Path

import jax
import numpy as np
import pytest
import tomli_w
from PIL import Image

from typedpipe import CODES, Diagnostic
from typedpipe.pipeline.check import check_draft, errors
from typedpipe.pipeline.config import load_draft


@pytest.fixture(scope="module", autouse=True)
def compiled_once(tmp_path_factory):
    """Most fixed pipelines are the same small one: JAX's persistent compilation cache
    compiles its train step once for the module instead of once per case."""
    names = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs")
    saved = [getattr(jax.config, name) for name in names]
    jax.config.update(names[0], str(tmp_path_factory.mktemp("xla-cache")))
    jax.config.update(names[1], 0.0)
    yield
    for name, value in zip(names, saved, strict=True):
        jax.config.update(name, value)


# --- applying a hint ---------------------------------------------------------------------------

_PLACE = (
    r"(?:\[model\] layers\[(?P<layer>\d+)\](?: \(\w+\))?"
    r"|\[\[preprocess\]\] #(?P<stage>\d+)(?: \(\w+\))?"
    r"|\[(?P<table>data|model|train)\]"
    r"|(?P<top>the top level))"
)
_STAGE = r"\[\[preprocess\]\] #(?P<index>\d+) \(\w+\)"
# Each form is followed by `rest`: nothing, a remark in parentheses or after a colon,
# or ` and ` and a further edit.
_FORMS = {
    "assign": rf"^(?:set )?(?P<pairs>\w+ = .+?) (?:under|in|at) {_PLACE}(?P<rest>.*)$",
    "rename": rf"^rename (?P<old>\w+) to (?P<new>\w+) (?:under|in|at) {_PLACE}(?P<rest>.*)$",
    "remove_key": rf"^remove (?P<key>\w+) from {_PLACE}(?P<rest>.*)$",
    "remove_stage": rf"^remove {_STAGE}(?P<rest>.*)$",
    "replace_stage": rf"^replace {_STAGE} with (?P<line>\[\[preprocess\]\] .+?)(?P<rest>( \(.*)?)$",
    "add_stage": (
        r"^add (?P<line>\[\[preprocess\]\] .+?) (?P<position>as the first stage|as the last stage"
        r"|before \[\[preprocess\]\] #(?P<before>\d+) \(\w+\))(?P<rest>.*)$"
    ),
    "add_layer": (
        r"^add (?P<entry>\{.+?\}) (?:before \[model\] layers\[(?P<before>\d+)\] \(\w+\)"
        r"|at the end of \[model\] layers)(?P<rest>.*)$"
    ),
}


def _values(text: str) -> dict:
    """`a = 1 and b = [2, 3]` or `op = "x" mean = [0.0] std = [1.0]` as a dict (TOML values)."""
    starts, depth, quoted = [], 0, False
    for match in re.finditer(r'[\[\]{}"]|(?:^|\s)(\w+) = ', text):
        token = match.group(0)
        if token == '"':
            quoted = not quoted
        elif quoted:
            continue
        elif token in "[{":
            depth += 1
        elif token in "]}":
            depth -= 1
        elif depth == 0:
            starts.append(match.start(1))
    pairs = [text[a:b].strip() for a, b in zip(starts, [*starts[1:], len(text)], strict=True)]
    return tomllib.loads("\n".join(p.removesuffix(" and") for p in pairs))


def _place(config: dict, match: re.Match) -> dict:
    if match["table"]:
        return config.setdefault(match["table"], {})
    if match["stage"]:
        return config["preprocess"][int(match["stage"]) - 1]
    if match["layer"]:
        return config["model"]["layers"][int(match["layer"])]
    return config


def _edit(config: dict, fix: str) -> dict | None:
    """`config` with `fix` applied, or None when `fix` is not a config edit."""
    for form, pattern in _FORMS.items():
        match = re.match(pattern, fix)
        if match is None:
            continue
        rest = match["rest"]
        if rest and not rest.startswith((" (", ":", ";", " and ")):
            continue
        config = copy.deepcopy(config)
        stages = config.setdefault("preprocess", [])
        if form == "assign":
            _place(config, match).update(_values(match["pairs"]))
        elif form == "rename":
            place = _place(config, match)
            place[match["new"]] = place.pop(match["old"])
        elif form == "remove_key":
            del _place(config, match)[match["key"]]
        elif form == "remove_stage":
            del stages[int(match["index"]) - 1]
        elif form == "replace_stage":
            stages[int(match["index"]) - 1] = _values(match["line"].removeprefix("[[preprocess]]"))
        elif form == "add_stage":
            stage = _values(match["line"].removeprefix("[[preprocess]]"))
            first_or_last = {"as the first stage": 0, "as the last stage": len(stages)}
            index = first_or_last.get(match["position"], int(match["before"] or 1) - 1)
            stages.insert(index, stage)
        else:
            entry = tomllib.loads(f"entry = {match['entry']}")["entry"]
            layers = config["model"]["layers"]
            layers.insert(int(match["before"]) if match["before"] else len(layers), entry)
        if rest.startswith(" and "):
            return _edit(config, rest.removeprefix(" and "))
        return config
    return None


def apply_hint(config: dict, hint: str) -> dict:
    """`config` with the first alternative of `hint` that is a config edit applied.

    An explanation may lead the edit (`resize at decode: size = ...`); alternatives
    follow `, or `.
    """
    for alternative in hint.split(", or "):
        for fix in (alternative, alternative.partition(": ")[2]):
            edited = _edit(config, fix.strip())
            if edited is not None:
                return edited
    raise AssertionError(f"no config edit in the hint {hint!r}")


# --- data and configs --------------------------------------------------------------------------

SIZE = 8
TINY = [{"type": "flatten"}, {"type": "dense", "features": 3}]


def write_npz(tmp: Path, images: np.ndarray, labels: np.ndarray | None = None) -> str:
    path = tmp / "data.npz"
    np.savez(path, images=images, labels=np.arange(len(images)) % 3 if labels is None else labels)
    return str(path)


def unit(shape=(90, SIZE, SIZE, 1), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(size=shape).astype(np.float32)


def npz_config(tmp: Path, images=None, labels=None, **model) -> dict:
    images = unit() if images is None else images
    return copy.deepcopy(
        {
            "data": {"source": "npz", "path": write_npz(tmp, images, labels)},
            "model": {
                "name": "sequential",
                "input": [SIZE, SIZE, images.shape[-1] if images.ndim == 4 else 1],
                "num_classes": 3,
                "layers": TINY,
                **model,
            },
            "train": {"batch_size": 8},
        }
    )


def png(path: Path, size=(SIZE, SIZE), mode="RGB", seed=0) -> None:
    rng = np.random.default_rng(seed)
    shape = (*size, 3) if mode == "RGB" else size
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(path)


def folder_config(tmp: Path, mode="RGB", per_class=10, **model) -> dict:
    root = tmp / "images"
    for label in range(3):
        for i in range(per_class):
            png(root / f"class{label}" / f"{i}.png", mode=mode, seed=label * 100 + i)
    channels = 3 if mode == "RGB" else 1
    return copy.deepcopy(
        {
            "data": {"source": "imagefolder", "path": str(root)},
            "preprocess": [{"op": "to_float"}],
            "model": {
                "name": "sequential",
                "input": [SIZE, SIZE, channels],
                "num_classes": 3,
                "layers": TINY,
                **model,
            },
            "train": {"batch_size": 8},
        }
    )


def with_(config: dict, table: str, **values) -> dict:
    config[table] = {**config.get(table, {}), **values}
    return config


def check(tmp: Path, config: dict, devices: int = 1) -> list[Diagnostic]:
    path = tmp / "config.toml"
    path.write_text(tomli_w.dumps(config))
    return check_draft(load_draft(path), devices=devices)


# --- one faulty pipeline per hint: (tmp) -> config --------------------------------------------


def _conv(**params) -> dict:
    return {"type": "conv", "features": 4, "kernel": 3, **params}


EDITS = {
    # config.unknown_key: the closest key, in each kind of table; or the key removed.
    "unknown_key/train": (
        "config.unknown_key",
        lambda t: with_(npz_config(t), "train", batchsize=8),
    ),
    "unknown_key/table": (
        "config.unknown_key",
        lambda t: {k if k != "train" else "trian": v for k, v in npz_config(t).items()},
    ),
    "unknown_key/top": ("config.unknown_key", lambda t: {**npz_config(t), "nmae": "run"}),
    "unknown_key/layer": (
        "config.unknown_key",
        lambda t: npz_config(t, layers=[_conv(kernal=3), *TINY]),
    ),
    "unknown_key/stage": (
        "config.unknown_key",
        lambda t: {**npz_config(t), "preprocess": [{"op": "resize", "heigth": 8, "width": 8}]},
    ),
    "unknown_key/none_close": (
        "config.unknown_key",
        lambda t: with_(npz_config(t), "train", xyz=1),
    ),
    # config.value: the closest allowed value, the default, or the value the data needs.
    "value/literal": (
        "config.value",
        lambda t: with_(npz_config(t), "train", precision="Float32"),
    ),
    "value/default": ("config.value", lambda t: with_(npz_config(t), "train", momentum=2.0)),
    "value/batch_size_type": (
        "config.value",
        lambda t: with_(npz_config(t, unit((40, SIZE, SIZE, 1))), "train", batch_size="big"),
    ),
    "value/batch_size_large": (
        "config.value",
        lambda t: with_(npz_config(t), "train", batch_size=4096),
    ),
    "value/batch_size_devices": (
        "config.value",
        lambda t: with_(npz_config(t), "train", batch_size=10),
    ),
    "value/num_classes": ("config.value", lambda t: npz_config(t, num_classes=1)),
    "value/input": ("config.value", lambda t: npz_config(t, input=[0, 8, 1])),
    "value/input_range": ("config.value", lambda t: npz_config(t, input_range=[1.0, 0.0])),
    "value/fractions": (
        "config.value",
        lambda t: with_(npz_config(t), "data", val_fraction=0.5, test_fraction=0.5),
    ),
    "value/layer_literal": (
        "config.value",
        lambda t: npz_config(t, layers=[_conv(padding="SAME"), *TINY]),
    ),
    "value/stage_scale": (
        "config.value",
        lambda t: {
            **npz_config(t, (unit() * 255).astype(np.uint8)),
            "preprocess": [{"op": "to_float", "scale": 0}],
        },
    ),
    "value/normalize_lengths": (
        "config.value",
        lambda t: {
            **npz_config(t, unit((90, SIZE, SIZE, 3)), input_range=[-1.0, 1.0]),
            "preprocess": [{"op": "normalize", "mean": [0.5, 0.5, 0.5], "std": [0.5]}],
        },
    ),
    "value/no_layers": ("config.value", lambda t: npz_config(t, layers=[])),
    "value/logits_softmax": (
        "config.value",
        lambda t: npz_config(
            t,
            layers=[{"type": "flatten"}, {"type": "dense", "features": 3, "activation": "softmax"}],
        ),
    ),
    "value/logits_relu": (
        "config.value",
        lambda t: npz_config(
            t,
            layers=[
                {"type": "flatten"},
                {"type": "dense", "features": 3, "activation": "relu"},
                {"type": "dropout", "rate": 0.1},
            ],
        ),
    ),
    # Registered names.
    "unknown_op": (
        "config.unknown_op",
        lambda t: {
            **npz_config(t, (unit() * 255).astype(np.uint8)),
            "preprocess": [{"op": "to_flaot"}],
        },
    ),
    "unknown_model": ("config.unknown_model", lambda t: npz_config(t, name="seqential")),
    "unknown_name/optimizer": (
        "config.unknown_name",
        lambda t: with_(npz_config(t), "train", optimizer="adamm"),
    ),
    "unknown_name/source": (
        "config.unknown_name",
        lambda t: with_(npz_config(t), "data", source="npzz"),
    ),
    "unknown_name/layer_type": (
        "config.unknown_name",
        lambda t: npz_config(t, layers=[{"type": "flatten"}, {"type": "dens", "features": 3}]),
    ),
    "unknown_name/activation": (
        "config.unknown_name",
        lambda t: npz_config(t, layers=[_conv(activation="rleu"), *TINY]),
    ),
    "unknown_name/hidden_softmax": (
        "config.unknown_name",
        lambda t: npz_config(t, layers=[_conv(activation="softmax"), *TINY]),
    ),
    "unknown_name/keras_linear": (
        "config.unknown_name",
        lambda t: npz_config(t, layers=[_conv(activation="linear"), *TINY]),
    ),
    # Shapes at the model and at the stages.
    "spatial/append_resize": ("shape.spatial", lambda t: npz_config(t, input=[12, 12, 1])),
    "spatial/decode_size": ("shape.spatial", lambda t: folder_config(t, input=[12, 12, 3])),
    "spatial/stage_size": (
        "shape.spatial",
        lambda t: {**npz_config(t), "preprocess": [{"op": "resize", "height": 6, "width": 6}]},
    ),
    "spatial/center_crop": (
        "shape.spatial",
        lambda t: {
            **npz_config(t, input=[10, 10, 1]),
            "preprocess": [{"op": "center_crop", "height": 10, "width": 10}],
        },
    ),
    "spatial/random_crop": (
        "shape.spatial",
        lambda t: {
            **npz_config(t, input=[10, 10, 1]),
            "preprocess": [{"op": "random_crop", "height": 10, "width": 10}],
        },
    ),
    "spatial/crop_uint8": (
        "shape.spatial",
        lambda t: {
            **npz_config(t, (unit() * 255).astype(np.uint8), input=[10, 10, 1]),
            "preprocess": [{"op": "center_crop", "height": 10, "width": 10}, {"op": "to_float"}],
        },
    ),
    "channels/to_rgb": ("shape.channels", lambda t: npz_config(t, input=[SIZE, SIZE, 3])),
    "channels/to_gray": (
        "shape.channels",
        lambda t: npz_config(t, unit((90, SIZE, SIZE, 3)), input=[SIZE, SIZE, 1]),
    ),
    "channels/decode_mode": ("shape.channels", lambda t: folder_config(t, input=[SIZE, SIZE, 1])),
    "channels/normalize": (
        "shape.channels",
        lambda t: {
            **npz_config(t, unit((90, SIZE, SIZE, 3))),
            "preprocess": [{"op": "normalize", "mean": [0.0], "std": [1.0]}],
        },
    ),
    "channels/rgb_twice": (
        "shape.channels",
        lambda t: {**npz_config(t, unit((90, SIZE, SIZE, 3))), "preprocess": [{"op": "to_rgb"}]},
    ),
    "channels/gray_twice": (
        "shape.channels",
        lambda t: {**npz_config(t), "preprocess": [{"op": "to_gray"}]},
    ),
    "layout": (
        "shape.layout",
        lambda t: npz_config(t, unit((90, 3, SIZE, SIZE)), input=[SIZE, SIZE, 3]),
    ),
    # Pixel types and ranges.
    "dtype/no_to_float": ("dtype.input", lambda t: npz_config(t, (unit() * 255).astype(np.uint8))),
    "dtype/uint16": ("dtype.input", lambda t: npz_config(t, (unit() * 65535).astype(np.uint16))),
    "dtype/before_stage": (
        "dtype.input",
        lambda t: {
            **npz_config(t, (unit() * 255).astype(np.uint8)),
            "preprocess": [{"op": "resize", "height": 8, "width": 8}],
        },
    ),
    "dtype/to_float_later": (
        "dtype.input",
        lambda t: {
            **npz_config(t, (unit() * 255).astype(np.uint8), input_range=[-1.0, 1.0]),
            "preprocess": [{"op": "normalize", "mean": [0.5], "std": [0.5]}, {"op": "to_float"}],
        },
    ),
    "dtype/float_255_to_float": (
        "dtype.input",
        lambda t: {**npz_config(t, unit() * 255), "preprocess": [{"op": "to_float"}]},
    ),
    "dtype/float_unit_to_float": (
        "dtype.input",
        lambda t: {**npz_config(t), "preprocess": [{"op": "to_float"}]},
    ),
    "range/float_255": ("range.input", lambda t: npz_config(t, unit() * 255)),
    "range/to_float_scale": (
        "range.input",
        lambda t: {
            **npz_config(t, (unit() * 255).astype(np.uint8)),
            "preprocess": [{"op": "to_float", "scale": 1.0}],
        },
    ),
    "range/uint16_scale": (
        "range.input",
        lambda t: {
            **npz_config(t, (unit() * 65535).astype(np.uint16)),
            "preprocess": [{"op": "to_float"}],
        },
    ),
    "range/huge": ("range.input", lambda t: npz_config(t, unit() * 1e30)),
    "range/signed": ("range.input", lambda t: npz_config(t, unit() * 2 - 1)),
    "range/rgb_255": ("range.input", lambda t: npz_config(t, unit((90, SIZE, SIZE, 3)) * 255)),
    # Labels.
    "labels_format/onehot": (
        "labels.format",
        lambda t: npz_config(t, labels=np.eye(3, dtype=np.float32)[np.arange(90) % 3]),
    ),
    "labels_format/int": ("labels.format", lambda t: with_(npz_config(t), "data", labels="onehot")),
    "labels_range": ("labels.range", lambda t: npz_config(t, labels=np.arange(90) % 3 + 1)),
    "labels_count": ("labels.count", lambda t: npz_config(t, num_classes=4)),
    # The model.
    "model_shape/padding": (
        "model.shape",
        lambda t: npz_config(
            t, layers=[_conv(stride=3, padding="valid"), _conv(stride=3, padding="valid"), *TINY]
        ),
    ),
    "model_shape/flatten": (
        "model.shape",
        lambda t: npz_config(t, layers=[_conv(), {"type": "dense", "features": 3}]),
    ),
    "model_shape/features": (
        "model.shape",
        lambda t: npz_config(t, layers=[{"type": "flatten"}, {"type": "dense", "features": 5}]),
    ),
    "model_shape/no_head": (
        "model.shape",
        lambda t: npz_config(t, layers=[_conv(), {"type": "gap"}]),
    ),
    "model_shape/named": ("model.shape", lambda t: npz_config(t, name="lenet")),
    # The data, where a decode setting fixes it.
    "size_mixed": ("data.size_mixed", None),
    "mode_mixed": ("data.mode_mixed", None),
    "memory_host/synthetic": (
        "memory.host",
        lambda t: {
            "data": {"source": "synthetic", "num_samples": 1_000_000},
            "model": {
                "name": "sequential",
                "input": [4096, 4096, 1],
                "num_classes": 3,
                "layers": copy.deepcopy(TINY),
            },
            "train": {"batch_size": 8},
        },
    ),
}


def _size_mixed(tmp: Path) -> dict:
    """Most files 12x12, one 10x12; the model wants 8x8: the hint is the model's size (#6)."""
    config = folder_config(tmp)
    root = Path(config["data"]["path"])
    for file in root.rglob("*.png"):
        png(file, size=(12, 12))
    png(root / "class2" / "odd.png", size=(10, 12))
    return config


def _mode_mixed(tmp: Path) -> dict:
    """Most files grayscale, one RGB; the model wants RGB: the hint is the model's mode."""
    config = folder_config(tmp, mode="L", input=[SIZE, SIZE, 3])
    png(Path(config["data"]["path"]) / "class1" / "colour.png")
    return config


EDITS["size_mixed"] = ("data.size_mixed", _size_mixed)
EDITS["mode_mixed"] = ("data.mode_mixed", _mode_mixed)

DEVICES = {"value/batch_size_devices": 4}

# Cases whose fix moves a stage: the hint must say so, not add a second one.
MOVES = {
    "dtype/to_float_later": "remove [[preprocess]] #2 (to_float) and add",
    "spatial/crop_uint8": "remove [[preprocess]] #2 (to_float) and add",
}


@pytest.mark.parametrize("case", EDITS)
def test_applying_the_hint_removes_the_fault_and_leaves_no_error(case, tmp_path):
    code, make = EDITS[case]
    config = make(tmp_path)
    devices = DEVICES.get(case, 1)
    before = check(tmp_path, config, devices)
    found = [d for d in before if d.code == code]
    assert found, f"no {code} among {[str(d) for d in before]}"
    assert found[0].is_error
    if case in MOVES:
        assert found[0].hint.startswith(MOVES[case]), found[0].hint
    fixed = apply_hint(config, found[0].hint)
    after = check(tmp_path, fixed, devices)
    assert not errors(after), f"{found[0].hint!r} left: " + "\n".join(str(d) for d in errors(after))


# --- what the hints say, for the issues that asked -------------------------------------------


def hint_of(tmp_path: Path, config: dict, code: str) -> str:
    (diagnostic,) = [d for d in check(tmp_path, config) if d.code == code]
    return diagnostic.hint


def test_softmax_on_the_logits_asks_for_none_and_never_relu(tmp_path):
    for activation in ("softmax", "sigmoid", "relu", "log_softmax", "relu6"):
        layers = [{"type": "flatten"}, {"type": "dense", "features": 3, "activation": activation}]
        (diagnostic,) = check(tmp_path, npz_config(tmp_path, layers=layers))
        assert diagnostic.hint == 'activation = "none" in [model] layers[1] (dense)'
        assert "the loss applies softmax to the logits" in diagnostic.message


def test_a_registered_model_with_an_activation_on_its_logits_is_refused_by_check(tmp_path):
    from flax import nnx

    from typedpipe import MODELS, build_model, check_pipeline, parse_config

    def sigmoid_head(input_shape, num_classes, layers=()):
        return [
            {"type": "flatten"},
            {"type": "dense", "features": num_classes, "activation": "sigmoid"},
        ]

    with MODELS.temporary("test_sigmoid_head", sigmoid_head):
        config = npz_config(tmp_path, name="test_sigmoid_head")
        (diagnostic,) = check_pipeline(parse_config(tomli_w.dumps(config)))
        assert (diagnostic.code, diagnostic.got) == ("config.value", "activation = 'sigmoid'")
        # Building it still works: a bundle trained before the rule still loads.
        nnx.eval_shape(lambda: build_model("test_sigmoid_head", (8, 8, 1), 3, rngs=nnx.Rngs(0)))


def test_float_pixels_in_0_255_get_the_stage_that_works_at_once(tmp_path):
    config = npz_config(tmp_path, unit() * 255)
    assert hint_of(tmp_path, config, "range.input").startswith(
        'add [[preprocess]] op = "normalize" mean = [0.0] std = [255.0] as the last stage'
    )
    config["preprocess"] = [{"op": "to_float", "scale": 1 / 255}]
    assert hint_of(tmp_path, config, "dtype.input") == (
        'replace [[preprocess]] #1 (to_float) with [[preprocess]] op = "normalize" '
        "mean = [0.0] std = [255.0] (the pixels are floats already)"
    )


def test_mixed_sizes_are_decoded_to_the_model_input(tmp_path):
    diagnostics = check(tmp_path, _size_mixed(tmp_path))
    (mixed,) = diagnostics  # no second shape.spatial for the size the files happen to have
    assert mixed.hint.startswith("size = [8, 8] under [data]")


def test_config_faults_do_not_hide_data_faults(tmp_path):
    config = with_(npz_config(tmp_path, unit() * 255), "train", optimizer="adamm")
    codes = [d.code for d in check(tmp_path, config)]
    assert codes == ["config.unknown_name", "range.input"]
    # A Keras port: softmax on the logits, a typo in [train], float pixels in 0..255.
    config["model"]["layers"][-1]["activation"] = "softmax"
    codes = [d.code for d in check(tmp_path, config)]
    assert codes == ["config.value", "config.unknown_name", "range.input"]
    # Where the data's table itself is wrong, its faults are all there is to report of it.
    config["data"]["layout"] = "nwhc"
    codes = [d.code for d in check(tmp_path, config)]
    assert codes == ["config.value", "config.value", "config.unknown_name"]


# --- hints that are not config edits name the file or the action -----------------------------


def _syntax(tmp: Path) -> str:
    return '[data\nsource = "digits"\n'


def _corrupt(tmp: Path) -> dict:
    config = folder_config(tmp)
    (Path(config["data"]["path"]) / "class0" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    return config


def _too_large(tmp: Path) -> dict:
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    config = folder_config(tmp)
    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    (Path(config["data"]["path"]) / "class1" / "bomb.png").write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")
    )
    return config


def _dangling(tmp: Path) -> dict:
    config = folder_config(tmp)
    (Path(config["data"]["path"]) / "class0" / "gone.png").symlink_to(tmp / "nowhere.png")
    return config


def _fifo(tmp: Path) -> dict:
    config = folder_config(tmp)
    os.mkfifo(Path(config["data"]["path"]) / "class2" / "pipe.png")
    return config


# code -> (faulty pipeline, what the hint must say, the item it must name (or ""))
ACTIONS = {
    "config.syntax": (_syntax, "fix the TOML syntax at the line named", ""),
    "shape.rank": (
        lambda t: npz_config(t, unit((90, SIZE, SIZE, 1, 1))),
        "store images as (n, h, w, c)",
        "",
    ),
    "value.nonfinite": (
        lambda t: npz_config(t, np.where(np.arange(90)[:, None, None, None] == 7, np.nan, unit())),
        "drop or repair these images",
        "#7",
    ),
    "data.mismatch": (
        lambda t: npz_config(t, labels=np.arange(80) % 3),
        "one label per image",
        "",
    ),
    "data.empty": (lambda t: folder_config(t, per_class=0), "", ""),
    "data.too_few": (lambda t: folder_config(t, per_class=2), "add images", ""),
    "data.corrupt": (_corrupt, "remove or replace", "class0/broken.png"),
    "data.too_large": (_too_large, "remove these files", "class1/bomb.png"),
    "data.link": (_dangling, "", "class0/gone.png"),
    "data.special": (_fifo, "", "class2/pipe.png"),
}


@pytest.mark.parametrize("code", ACTIONS)
def test_a_hint_that_is_no_config_edit_names_the_file_or_the_action(code, tmp_path):
    make, action, item = ACTIONS[code]
    config = make(tmp_path)
    if isinstance(config, str):
        (tmp_path / "config.toml").write_text(config)
        found = check_draft(load_draft(tmp_path / "config.toml"))
    else:
        found = check(tmp_path, config)
    (diagnostic,) = [d for d in found if d.code == code]
    assert diagnostic.hint and action in diagnostic.hint
    assert not item or any(i.startswith(item) for i in diagnostic.items), diagnostic.items
    if code == "config.syntax":
        assert "config.toml" in diagnostic.message and "line 1" in diagnostic.message


def test_a_warning_hint_applied_silences_the_warning(tmp_path):
    """data.lossy: RGBA files decoded as RGB; the hint says the loss is on purpose."""
    config = folder_config(tmp_path)
    for file in Path(config["data"]["path"]).rglob("*.png"):
        Image.open(file).convert("RGBA").save(file)
    config["data"]["mode"] = "rgb"
    found = check(tmp_path, config)
    assert [(d.code, d.severity) for d in found] == [("data.lossy", "warning")], found
    (warning,) = found
    assert check(tmp_path, apply_hint(config, warning.hint)) == []


# Codes no pipeline check gives: training, resuming, writing the run and loading a bundle
# raise them, and these tests produce each one and hold its hint to its action.
ELSEWHERE = {
    "memory.exceeds": "test_check_codes.py",  # the hint's batch_size applied, checked again
    "step.trace": "test_check_codes.py",
    "numeric.nonfinite": "test_train.py",
    "run.locked": "test_faults.py",
    "resume.missing": "test_faults.py",
    "resume.mismatch": "test_faults.py",
    "checkpoint.corrupt": "test_faults.py",
    "io.write": "test_faults.py",
    "bundle.version": "test_export.py",
    "bundle.corrupt": "test_export.py",
    "data.permission": "test_hostile.py",  # root reads anything: tested with care there
    "devices.collectives": "test_cli.py",  # a warning of --devices; the command goes on
    # A weights file's fit, read from its header; each hint's action is tested there.
    "weights.mismatch": "test_weights.py",
    "weights.new_head": "test_weights.py",
    "weights.missing": "test_weights.py",
    "weights.format": "test_weights.py",
    "weights.corrupt": "test_weights.py",
}


def test_every_code_in_the_catalog_has_its_hint_tested():
    walked = {code for code, _ in EDITS.values()} | set(ACTIONS) | {"data.lossy"}
    assert not walked & set(ELSEWHERE)
    assert set(CODES) == walked | set(ELSEWHERE), set(CODES) ^ (walked | set(ELSEWHERE))
    for code, file in ELSEWHERE.items():
        text = (Path(__file__).parent / file).read_text()
        assert f'"{code}"' in text, f"{file} does not produce {code}"


def test_the_applier_reads_every_form_the_hints_module_lists():
    config = {"train": {"batchsize": 8, "xyz": 1}, "preprocess": [{"op": "resize"}]}
    config["model"] = {"layers": [{"type": "conv"}, {"type": "dense"}]}
    edits = {
        "epochs = 3 under [train]": ("train", "epochs", 3),
        'name = "a" at the top level': (None, "name", "a"),
        "height = 4 and width = 5 in [[preprocess]] #1 (resize)": (
            "preprocess",
            0,
            {"op": "resize", "height": 4, "width": 5},
        ),
        'padding = "same" in [model] layers[0] (conv)': (
            "layers",
            0,
            {"type": "conv", "padding": "same"},
        ),
        "rename batchsize to batch_size under [train]": ("train", "batch_size", 8),
        "remove xyz from [train] (valid keys: a, b)": ("train", "xyz", None),
        'add [[preprocess]] op = "to_float" scale = 0.5 as the first stage': (
            "preprocess",
            0,
            {"op": "to_float", "scale": 0.5},
        ),
        'replace [[preprocess]] #1 (resize) with [[preprocess]] op = "to_rgb" (why)': (
            "preprocess",
            0,
            {"op": "to_rgb"},
        ),
        "remove [[preprocess]] #1 (resize): it is not needed": ("preprocess", None, []),
        'add {type = "flatten"} before [model] layers[1] (dense)': (
            "layers",
            1,
            {"type": "flatten"},
        ),
        'size = [8, 8] under [data] and mode = "rgb" under [data]': ("data", "mode", "rgb"),
    }
    for hint, (where, key, value) in edits.items():
        edited = apply_hint(config, hint)
        place = {
            None: edited,
            "train": edited.get("train"),
            "data": edited.get("data"),
            "preprocess": edited["preprocess"],
            "layers": edited["model"]["layers"],
        }[where]
        if key is None:
            assert place == value, hint
        elif value is None:
            assert key not in place, hint
        else:
            assert place[key] == value, hint
    with pytest.raises(AssertionError, match="no config edit"):
        apply_hint(config, "store the images as uint8")
