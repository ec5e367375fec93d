"""A user's own stage, layer, model and source, registered through the public API only,
used from a TOML config: they pass `check` and train."""

import importlib
import json
import subprocess
import sys
import textwrap

import pytest

import typedpipe

USER_MODULE = '''
import dataclasses
from typing import ClassVar

import numpy as np
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Float, UInt8

import typedpipe as tp


@tp.register_stage
@dataclasses.dataclass(frozen=True)
class Invert(tp.Stage):
    """255 - x on uint8 pixels."""

    op: ClassVar[str] = "my_invert"

    def in_spec(self, spec):
        self._require(spec, dtype="int")
        return spec

    @tp.contract
    def __call__(self, images: UInt8[Array, "b h w c"], key=None) -> UInt8[Array, "b h w c"]:
        return jnp.uint8(255) - images


@tp.register_layer
class Gain(tp.Layer):
    """A learned per-channel gain. `b h w c -> b h w c`."""

    kind = "my_gain"

    def __init__(self, in_features: int, initial: float = 1.0, *, name="gain", rngs: nnx.Rngs):
        self.name, self.features = name, in_features
        self.gain = nnx.Param(jnp.full((in_features,), initial, jnp.float32))

    def output_shape(self, shape):
        self._require_image(shape, self.features)
        return shape

    @tp.contract
    def __call__(
        self, x: Float[Array, "b h w {self.features}"]
    ) -> Float[Array, "b h w {self.features}"]:
        return x * self.gain[...][None, None, None, :]  # explicit rank: strict promotion


@tp.register_model("my_tiny")
def tiny(input_shape, num_classes, layers=()):
    return [{"type": "my_gain", "initial": 0.5}, {"type": "flatten"},
            {"type": "dense", "features": num_classes}]


@dataclasses.dataclass(frozen=True)
class BlobOptions:
    count: int = 64


@tp.register_source("my_blobs")
class Blobs(tp.ArraySource):
    """Bright or dark 8x8 squares: class 1 is bright."""

    Options = BlobOptions

    def arrays(self):
        rng = np.random.default_rng(self.context.seed)
        labels = np.arange(self.options.count, dtype=np.int32) % 2
        base = np.where(labels[:, None, None, None] == 1, 200, 40)
        noise = rng.integers(0, 40, (self.options.count, 8, 8, 1))
        images = (base + noise).astype(np.uint8)
        return images, labels, tp.LabelSpec("int", 2), ("dark", "bright")
'''

CONFIG = """
name = "extended"
[data]
source = "my_blobs"
count = 96
val_fraction = 0.125
test_fraction = 0.25

[[preprocess]]
op = "my_invert"

[[preprocess]]
op = "to_float"

[model]
name = "my_tiny"
input = [8, 8, 1]
num_classes = 2

[train]
epochs = 1
batch_size = 16
"""


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """Import the user's module (its registrations), and forget them after the test."""
    registries = (typedpipe.STAGES, typedpipe.LAYERS, typedpipe.MODELS, typedpipe.SOURCES)
    before = [set(r) for r in registries]
    (tmp_path / "my_extensions.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield importlib.import_module("my_extensions")
    sys.modules.pop("my_extensions", None)
    for registry, names in zip(registries, before, strict=True):
        for name in set(registry) - names:
            registry._entries.pop(name)


def test_user_extensions_pass_check_and_train_one_step(user_module, tmp_path):
    config = typedpipe.parse_config(CONFIG)
    assert typedpipe.check_pipeline(config) == []
    metrics = typedpipe.train_run(config, tmp_path / "run", max_steps=1)
    assert metrics["steps"] == 1 and metrics["skipped_steps"] == 0
    assert metrics["test_accuracy"] is not None


def test_user_extensions_get_the_same_strict_checks(user_module):
    broken = CONFIG.replace("count = 96", "cuont = 96").replace('"my_tiny"', '"my_tinny"')
    with pytest.raises(typedpipe.ConfigError) as info:
        typedpipe.parse_config(broken)
    found = {d.code: d for d in info.value.diagnostics}
    assert found["config.unknown_key"].hint == "rename cuont to count under [data]"
    assert found["config.unknown_model"].hint == (
        "name = \"my_tiny\" under [model] (did you mean 'my_tiny'?)"
    )
    # The user's stage keeps its contract: float pixels reaching it are refused by name.
    swapped = CONFIG.replace('op = "my_invert"', 'op = "to_float"', 1).replace(
        '[[preprocess]]\nop = "to_float"\n\n[model]', '[[preprocess]]\nop = "my_invert"\n\n[model]'
    )
    (diagnostic,) = typedpipe.check_pipeline(typedpipe.parse_config(swapped))
    assert (diagnostic.code, diagnostic.stage) == ("dtype.input", "preprocess[1] my_invert")


def test_a_layer_entry_is_validated_when_the_config_is_parsed(user_module):
    text = CONFIG.replace(
        'name = "my_tiny"',
        'name = "sequential"\nlayers = [{type = "my_gain", inital = 2.0}, '
        '{type = "flatten"}, {type = "dense", features = 2}]',
    )
    with pytest.raises(typedpipe.ConfigError) as info:
        typedpipe.parse_config(text, source="c.toml")
    (diagnostic,) = info.value.diagnostics
    assert diagnostic.code == "config.unknown_key"
    assert diagnostic.message.startswith("c.toml:17: ")
    assert diagnostic.hint == "rename inital to initial in [model] layers[0] (my_gain)"


def python(script: str) -> str:
    run = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    return run.stdout.strip()


def test_importing_typedpipe_keeps_the_callers_matplotlib_backend():
    script = """
        import matplotlib
        matplotlib.use("svg")
        import typedpipe
        print(matplotlib.get_backend())
    """
    assert python(script) == "svg"


def test_importing_typedpipe_imports_no_library_a_command_may_not_need():
    script = """
        import sys
        import typedpipe
        heavy = {"orbax.checkpoint", "grain", "sklearn", "PIL", "matplotlib", "tomli_w"}
        print(sorted(heavy & set(sys.modules)))
    """
    assert python(script) == "[]"


def test_the_public_surface_keeps_every_earlier_name():
    earlier = [
        "CODES",
        "ConfigError",
        "ContractError",
        "Diagnostic",
        "ImageSpec",
        "LabelSpec",
        "TrainingStopped",
        "contract",
        "MODELS",
        "Classifier",
        "build_model",
        "check_pipeline",
        "Config",
        "load_config",
        "parse_config",
        "train_run",
        "STAGES",
        "Preprocess",
        "make_stage",
    ]
    extension_points = [
        "Stage",
        "register_stage",
        "Layer",
        "register_layer",
        "register_model",
        "Source",
        "register_source",
        "ExportedModel",
        "fit",
        "Callback",
    ]
    missing = [n for n in earlier + extension_points if not hasattr(typedpipe, n)]
    assert missing == []
    assert json.dumps(sorted(typedpipe.STAGES))  # registries list their names
