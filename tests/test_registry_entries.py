"""Every registry entry is held to a test that builds or runs it.

Each `Registry` the package holds has an exerciser here, parametrised over its names,
so an entry is exercised the day it is registered, without a test written for it:

- a stage is built from its defaults and run, eagerly and under `jax.jit`, on the first
  of a few standard batches its `in_spec` accepts; the output has the spec's shape,
  dtype and value range;
- a layer is built on the first standard input `output_shape` accepts and run; the
  output has that shape;
- a model is built with `nnx.eval_shape` on the first standard input it builds on and
  traced abstractly; small ones also run one real forward;
- an optimizer takes one step down a parabola; an activation is applied and
  differentiated; a source surveys a tiny dataset and serves its records.

An entry's inputs come from the entry itself (its declared parameters and defaults, its
spec). What it cannot do without (a resize's height, a dense layer's features, a file
source's data) comes from SETTINGS, the one table here. `test_every_entry_is_covered`
fails for an entry whose required settings are neither defaulted nor in SETTINGS,
`test_every_registry_is_exercised` for a registry without an exerciser, and
`test_every_entry_is_registered_by_importing_its_registry` for an entry that only some
other import registers (it would escape the parametrisations).
"""

import ast
import dataclasses
import importlib
import math
import pkgutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import typedpipe
from typedpipe.contracts import ConfigError, ContractError, ImageSpec
from typedpipe.models import MODELS, build_model
from typedpipe.models.layers import ACTIVATIONS, LAYERS
from typedpipe.pipeline.export import ARTIFACTS, Inference
from typedpipe.pipeline.sources import SOURCES, SourceContext
from typedpipe.pipeline.stages import STAGES
from typedpipe.pipeline.train.optimizers import OPTIMIZERS, make_optimizer
from typedpipe.registry import Registry

# -- The table: settings an entry cannot do without, by registry kind and name. ----------
# A new entry with a required setting, or one no standard input fits, gets a row here.

NUM_CLASSES = 3


def tiny_npz(folder: Path) -> dict[str, Any]:
    """Six 8x8 gray images in three classes, as `np.savez` writes them."""
    images = np.random.default_rng(0).integers(0, 256, (6, 8, 8, 1), dtype=np.uint8)
    np.savez(folder / "tiny.npz", images=images, labels=np.arange(6) % NUM_CLASSES)
    return {"path": str(folder / "tiny.npz")}


def tiny_folder(folder: Path) -> dict[str, Any]:
    """Two 8x8 RGB PNGs in each of three class folders."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for name in ("a", "b", "c")[:NUM_CLASSES]:
        (folder / "images" / name).mkdir(parents=True)
        for i in range(2):
            pixels = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / "images" / name / f"{i}.png")
    return {"path": str(folder / "images")}


SETTINGS: dict[str, dict[str, Any]] = {
    "preprocessing op": {
        "resize": {"height": 6, "width": 4},
        "center_crop": {"height": 6, "width": 4},
        "random_crop": {"height": 6, "width": 4},
        "random_resized_crop": {"height": 6, "width": 4},
    },
    "layer type": {
        "conv": {"features": 4},
        "dense": {"features": 4},
        "residual": {"features": 4},
        "basic_block": {"features": 4},
        "bottleneck": {"features": 8},
        "conv_bn": {"features": 4},
        "squeeze_excite": {"squeeze": 2},
        "inverted_residual": {"expand": 8, "features": 4},
        "patch_embed": {"features": 8, "patch": 3},
        "encoder_block": {"heads": 2, "mlp_features": 16},
    },
    "model": {
        "sequential": {"layers": ({"type": "flatten"}, {"type": "dense", "features": NUM_CLASSES})},
    },
    # A source's row writes its tiny dataset into a folder and returns its [data] keys.
    "data source": {"npz": tiny_npz, "imagefolder": tiny_folder},
    "optimizer": {},
    "activation": {},
    "artifact format": {},
}

# -- The standard inputs an entry's own contract picks from, in order. --------------------

# The first a stage's `in_spec` accepts is its input.
SPECS = (
    ImageSpec(8, 8, 3, "uint8", (0.0, 255.0)),
    ImageSpec(8, 8, 3, "float32", (0.0, 1.0)),
    ImageSpec(8, 8, 1, "uint8", (0.0, 255.0)),
    ImageSpec(8, 8, 1, "float32", (0.0, 1.0)),
)
# The first a layer's `output_shape` accepts: an image, flat features, a sequence of tokens.
SHAPES = ((6, 6, 3), (12,), (4, 8))
# The first a model builds on: CIFAR-sized first, ImageNet's 224 for what needs it.
INPUTS = ((8, 8, 3), (32, 32, 3), (64, 64, 3), (224, 224, 3))
# A model this small (parameters, pixels) also runs one real forward.
SMALL_PARAMS, SMALL_PIXELS = 1_000_000, 32 * 32 * 3


def required(kind: str, name: str) -> set[str]:
    """The settings an entry declares without a default (models and optimizers declare none)."""
    if kind == "preprocessing op":
        return {f.name for f in dataclasses.fields(STAGES[name]) if _no_default(f)}
    if kind == "layer type":
        return {key for key, (_, needed) in LAYERS[name].params().items() if needed}
    if kind == "data source":
        options = SOURCES[name].Options
        return {f.name for f in dataclasses.fields(options) if _no_default(f)}
    return set()


def declared(kind: str, name: str) -> set[str] | None:
    """Every setting an entry declares (None: any is passed through to the entry)."""
    if kind == "preprocessing op":
        return {f.name for f in dataclasses.fields(STAGES[name]) if f.init}
    if kind == "layer type":
        return set(LAYERS[name].params())
    if kind == "model":
        return {"layers"}
    return None


def _no_default(field: dataclasses.Field) -> bool:
    no_value = field.default is dataclasses.MISSING
    return field.init and no_value and field.default_factory is dataclasses.MISSING


def builds_without_settings(name: str) -> bool:
    """Whether a model's architecture yields layers for some standard input by itself."""
    for shape in INPUTS:
        try:
            MODELS[name](shape, NUM_CLASSES, ())
        except (ConfigError, ContractError):
            continue
        return True
    return False


# -- Which registries exist. -----------------------------------------------------------

EXERCISED: dict[str, Registry] = {
    "preprocessing op": STAGES,
    "layer type": LAYERS,
    "model": MODELS,
    "data source": SOURCES,
    "optimizer": OPTIMIZERS,
    "activation": ACTIVATIONS,
    "artifact format": ARTIFACTS,
}


def every_registry() -> list[Registry]:
    """Every registry any typedpipe module holds, once each (a `__main__` is not imported:
    it runs the command)."""
    for info in pkgutil.walk_packages(typedpipe.__path__, "typedpipe."):
        if not info.name.endswith(".__main__"):
            importlib.import_module(info.name)
    found: dict[int, Registry] = {}
    for name, module in list(sys.modules.items()):
        if name.startswith("typedpipe."):
            for value in list(vars(module).values()):
                if isinstance(value, Registry):
                    found[id(value)] = value
    return list(found.values())


def test_every_registry_is_exercised():
    found = every_registry()
    kinds = sorted(registry.kind for registry in found)
    assert len(set(kinds)) == len(kinds), f"two registries share a kind: {kinds}"
    assert set(kinds) == set(EXERCISED), "add an exerciser (and its SETTINGS) for a new registry"
    for registry in found:
        assert registry is EXERCISED[registry.kind]


# The packages the registries are imported from, here and by the config loader.
HOMES = (
    "typedpipe.models",
    "typedpipe.models.layers",
    "typedpipe.pipeline.export",
    "typedpipe.pipeline.sources",
    "typedpipe.pipeline.stages",
    "typedpipe.pipeline.train.optimizers",
)

# In a fresh Python: what importing every other module adds to the registries.
LATE_REGISTRATIONS = """
import importlib, pkgutil, sys
import typedpipe
from typedpipe.registry import Registry

def names():
    return {
        value.kind: set(value.names())
        for module in list(sys.modules.values())
        for value in list(vars(module).values())
        if isinstance(value, Registry)
    }

for home in sys.argv[1:]:
    importlib.import_module(home)
before = names()
for info in pkgutil.walk_packages(typedpipe.__path__, "typedpipe."):
    if not info.name.endswith(".__main__"):
        importlib.import_module(info.name)
after = names()
print(sorted((kind, sorted(after[kind] - before.get(kind, set()))) for kind in after))
"""


def test_every_entry_is_registered_by_importing_its_registry():
    # An entry registered only when some other module is imported is missing from a
    # config (and from the parametrisations here) until something happens to import it.
    command = [sys.executable, "-c", LATE_REGISTRATIONS, *HOMES]
    run = subprocess.run(command, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    late = [(kind, names) for kind, names in ast.literal_eval(run.stdout) if names]
    assert not late, f"registered only when another module is imported: {late}"


def test_every_entry_is_covered():
    uncovered = []
    for kind, registry in EXERCISED.items():
        for name in registry.names():
            row = SETTINGS[kind].get(name, {})
            given = set(row) if isinstance(row, dict) else required(kind, name)
            missing = required(kind, name) - given
            if missing:
                uncovered.append(f"{kind} {name!r} needs {sorted(missing)}")
            elif kind == "model" and not row and not builds_without_settings(name):
                uncovered.append(f"model {name!r} builds on none of {INPUTS}")
    assert not uncovered, "add a row to SETTINGS for: " + "; ".join(uncovered)


def test_settings_name_only_registered_entries_and_their_keys():
    for kind, rows in SETTINGS.items():
        for name, row in rows.items():
            assert name in EXERCISED[kind], f"SETTINGS[{kind!r}] names {name!r}, not registered"
            keys = declared(kind, name)
            if keys is not None and isinstance(row, dict):
                assert set(row) <= keys, f"{kind} {name!r} declares no {sorted(set(row) - keys)}"


# -- Stages. --------------------------------------------------------------------------


def batch_of(spec: ImageSpec, count: int = 2) -> jax.Array:
    """Random pixels filling `spec`'s value range."""
    rng = np.random.default_rng(0)
    shape = (count, *spec.shape)
    assert spec.value_range is not None
    lo, hi = spec.value_range
    if spec.is_float:
        return jnp.asarray(rng.uniform(lo, hi, shape).astype(spec.dtype))
    return jnp.asarray(rng.integers(int(lo), int(hi) + 1, shape).astype(spec.dtype))


def fitting_spec(stage) -> tuple[ImageSpec, ImageSpec]:
    refused = []
    for spec in SPECS:
        try:
            return spec, stage.in_spec(spec)
        except ContractError as err:
            refused.append(f"{spec.describe()}: {err.diagnostics[0].code}")
    pytest.fail(f"{stage.op} accepts none of SPECS ({'; '.join(refused)}): add one it takes")


@pytest.mark.parametrize("op", STAGES.names())
def test_stage_runs_as_its_spec_says_eagerly_and_under_jit(op):
    stage = STAGES[op](**SETTINGS["preprocessing op"].get(op, {}))
    spec, out_spec = fitting_spec(stage)
    images = batch_of(spec)
    key = jax.random.key(0)

    def apply(x):
        return stage(x, key) if stage.augmentation else stage(x)

    eager, jitted = apply(images), jax.jit(apply)(images)
    for out in (eager, jitted):
        assert out.shape == (2, *out_spec.shape)
        assert str(out.dtype) == out_spec.dtype
        values = np.asarray(out, np.float64)
        assert np.isfinite(values).all()
        if out_spec.value_range is not None:
            lo, hi = out_spec.value_range
            slack = 1e-5 * max(1.0, hi - lo)
            assert lo - slack <= values.min() and values.max() <= hi + slack, (values.min(), hi)
    np.testing.assert_allclose(
        np.asarray(eager, np.float64), np.asarray(jitted, np.float64), rtol=1e-5, atol=1e-5
    )


# -- Layers. --------------------------------------------------------------------------


def fitting_layer(kind: str):
    cls, refused = LAYERS[kind], []
    for shape in SHAPES:
        settings = SETTINGS["layer type"].get(kind, {})
        try:
            layer = cls.build(shape, name=f"test_{kind}", rngs=nnx.Rngs(0), **settings)
            return layer, shape, layer.output_shape(shape)
        except (ConfigError, ContractError) as err:
            refused.append(f"{shape}: {err.diagnostics[0].code} {err.diagnostics[0].message}")
    pytest.fail(
        f"{kind} builds on none of the standard inputs ({'; '.join(refused)}): "
        "give it settings in SETTINGS"
    )


@pytest.mark.parametrize("kind", LAYERS.names())
def test_layer_output_has_its_declared_shape_eagerly_and_under_jit(kind):
    layer, shape, out_shape = fitting_layer(kind)
    assert layer.flops(shape) >= 0
    x = jax.random.normal(jax.random.key(1), (2, *shape))
    trained = [layer(x), nnx.jit(lambda layer, x: layer(x))(layer, x)]
    layer.eval()
    inferred = [layer(x), jax.jit(lambda x: layer(x))(x)]
    for out in (*trained, *inferred):
        assert out.shape == (2, *out_shape) and out.dtype == jnp.float32
        assert bool(jnp.isfinite(out).all())
    np.testing.assert_allclose(*inferred, rtol=1e-5, atol=1e-5)


# -- Models. --------------------------------------------------------------------------


def fitting_model(name: str):
    settings, refused = SETTINGS["model"].get(name, {}), []
    for shape in INPUTS:

        def build(shape=shape):
            return build_model(name, shape, NUM_CLASSES, rngs=nnx.Rngs(0), **settings)

        try:
            return shape, build, nnx.eval_shape(build)
        except (ConfigError, ContractError) as err:
            found = err.diagnostics[0]
            refused.append(f"{'x'.join(map(str, shape))}: {found.code} {found.message}")
    pytest.fail(
        f"model {name} builds on none of INPUTS ({'; '.join(refused)}): "
        "give it settings in SETTINGS"
    )


@pytest.mark.parametrize("name", MODELS.names())
def test_model_builds_abstractly_and_the_small_ones_run(name):
    shape, build, abstract = fitting_model(name)
    abstract.eval()
    graph, state = nnx.split(abstract)
    images = jax.ShapeDtypeStruct((2, *shape), jnp.float32)
    logits = jax.eval_shape(lambda state, x: nnx.merge(graph, state)(x), state, images)
    assert (logits.shape, logits.dtype) == ((2, NUM_CLASSES), jnp.float32)
    params = sum(math.prod(p.shape) for p in jax.tree.leaves(nnx.state(abstract, nnx.Param)))
    assert params > 0
    if params <= SMALL_PARAMS and math.prod(shape) <= SMALL_PIXELS:
        model = build()
        model.eval()
        x = jax.random.uniform(jax.random.key(0), images.shape)
        out = jax.jit(lambda x: model(x))(x)
        assert out.shape == (2, NUM_CLASSES) and bool(jnp.isfinite(out).all())


# -- Optimizers and activations. ------------------------------------------------------


def parabola(params: dict[str, jax.Array]) -> jax.Array:
    return jnp.sum((params["w"] - 0.5) ** 2)


@pytest.mark.parametrize("name", OPTIMIZERS.names())
def test_optimizer_steps_down_a_parabola(name):
    import optax

    tx = make_optimizer(name, 0.1, **SETTINGS["optimizer"].get(name, {}))
    params = {"w": jnp.array([1.5, -2.0, 0.0], jnp.float32)}

    def step(params, state):
        grads = jax.grad(parabola)(params)
        with jax.numpy_dtype_promotion("standard"):  # optax is not strict-promotion clean
            updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    state = tx.init(params)
    eager, eager_state = step(params, state)
    jitted, _ = jax.jit(step)(params, state)
    assert float(parabola(eager)) < float(parabola(params))
    assert eager["w"].dtype == jnp.float32
    for leaf in jax.tree.leaves(eager_state):
        assert not jnp.issubdtype(leaf.dtype, jnp.floating) or leaf.dtype == jnp.float32
    np.testing.assert_allclose(eager["w"], jitted["w"], rtol=1e-6)


@pytest.mark.parametrize("name", ACTIVATIONS.names())
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_activation_keeps_shape_and_dtype_and_has_finite_gradients(name, dtype):
    activate = ACTIVATIONS[name]
    x = jnp.linspace(-4.0, 4.0, 17, dtype=dtype).reshape(1, 17)
    eager, jitted = activate(x), jax.jit(activate)(x)
    assert (eager.shape, eager.dtype) == (x.shape, dtype)
    assert bool(jnp.isfinite(eager).all())
    np.testing.assert_allclose(np.asarray(eager, np.float32), np.asarray(jitted, np.float32))
    grads = jax.grad(lambda x: activate(x).astype(jnp.float32).sum())(x)
    assert bool(jnp.isfinite(grads).all())


# -- Sources. -------------------------------------------------------------------------


@pytest.mark.parametrize("name", SOURCES.names())
def test_source_surveys_a_tiny_dataset_and_serves_its_records(name, tmp_path):
    cls = SOURCES[name]
    write: Callable[[Path], dict[str, Any]] = SETTINGS["data source"].get(name, lambda _: {})
    context = SourceContext(model_input=(8, 8, 1), num_classes=NUM_CLASSES)
    source = cls(cls.Options(**write(tmp_path)), context)
    survey = source.survey()
    assert survey.errors == [] and survey.spec is not None
    assert len(survey.labels) > 0
    assert survey.label_spec.num_classes == len(survey.class_names) > 1
    records = source.records(survey)
    assert len(records) == len(survey.labels)
    image, label = records[len(records) - 1]
    assert image.shape == survey.spec.shape and str(image.dtype) == survey.spec.dtype
    assert np.array_equal(label, survey.labels[-1])


def test_an_entry_without_its_settings_is_reported():
    # The guard itself: an entry nobody wrote settings for fails, naming what it needs.
    @dataclasses.dataclass(frozen=True)
    class Tile(typedpipe.Stage):
        op = "test_tile"
        times: int

    with STAGES.temporary("test_tile", Tile), pytest.raises(AssertionError) as info:
        test_every_entry_is_covered()
    assert "preprocessing op 'test_tile' needs ['times']" in str(info.value)


# -- Artifact formats: each writes its one file from an inference function. -------------


@pytest.mark.parametrize("name", ARTIFACTS.names())
def test_artifact_writes_its_file_and_says_so(name, tmp_path):
    artifact = ARTIFACTS[name]
    weights = jnp.arange(NUM_CLASSES, dtype=jnp.float32)

    def probabilities(images):  # stored uint8 in, one row of class probabilities per image
        brightness = images.astype(jnp.float32).mean(axis=(1, 2, 3))[:, None] / 255.0
        return jax.nn.softmax(brightness * weights[None, :], axis=-1)

    spec = ImageSpec(8, 8, 1, "uint8", (0.0, 255.0))
    section = artifact.write(Inference(probabilities, spec, ("cpu",)), tmp_path / artifact.file)
    assert section["file"] == artifact.file
    assert (tmp_path / artifact.file).stat().st_size > 0
    assert [p.name for p in tmp_path.iterdir()] == [artifact.file]  # written whole, once
