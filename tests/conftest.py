"""Strict JAX for every test: several CPU devices, no implicit rank or dtype promotion."""

import os
import tempfile

# Before JAX is imported anywhere: four host devices to exercise sharding.
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# One persistent compilation cache for every test worker and every CLI subprocess: most
# tests compile the same few train steps, and a compile costs more than most tests.
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR",
    os.path.join(tempfile.gettempdir(), f"typedpipe-tests-xla-cache-{os.getuid()}"),
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

import jax
import numpy as np
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_numpy_dtype_promotion", "strict")


@pytest.fixture(params=["eager", "jit"])
def run(request):
    """Call a function eagerly and under jax.jit: the two differ more than one expects."""

    def call(fn, *args):
        return jax.jit(fn)(*args) if request.param == "jit" else fn(*args)

    return call


def as_numpy(tree):
    """Every leaf of a pytree as a NumPy array (PRNG keys as their data): comparable bit by bit."""

    def leaf_of(leaf):
        if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            return np.asarray(jax.random.key_data(leaf))
        return np.asarray(leaf)

    return jax.tree.map(leaf_of, tree)


@pytest.fixture
def newest_checkpoint():
    """`restore(run_folder, config, steps_per_epoch)`: the step and state (as NumPy) of a
    run's newest checkpoint."""
    from typedpipe import make_train
    from typedpipe.pipeline.train.checkpoint import Checkpoints

    def restore(run, config, steps_per_epoch):
        like = jax.jit(make_train(config, "int", steps_per_epoch).init_state)(jax.random.key(0))
        with Checkpoints(run / "checkpoints") as checkpoints:
            step = checkpoints.latest_step()
            return step, as_numpy(checkpoints.restore(step, like=like))

    return restore


@pytest.fixture
def numpy_tree():
    """`as_numpy`, for tests."""
    return as_numpy


@pytest.fixture(scope="session")
def reference():
    """tests/reference.py, for equivalence tests against PyTorch models (skips without torch)."""
    import importlib.util
    import pathlib

    pytest.importorskip("torch")
    pytest.importorskip("safetensors")
    path = pathlib.Path(__file__).with_name("reference.py")
    spec = importlib.util.spec_from_file_location("typedpipe_tests_reference", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ImageNet-sized models cost minutes of CPU each where a test compiles their train or
# forward step. `make test` leaves those runs out (it must stay under 10 minutes on 2
# cores) and keeps one model of each family (resnet18, mobilenet_v3_small, vit_s_16) in
# the equivalence tests; `make test-slow` runs the rest. Shape, parameter, FLOP and
# contract tests of every model stay in `make test`: they build on shapes alone.
SLOW_MODELS = (
    "resnet34",
    "resnet50",
    "mobilenet_v3_large",
    "efficientnet_b0",
    "convnext_tiny",
    "vit_b_16",
)
# Tests that compile a step of the model they name, and those of a 224 px step.
_COMPILING = (
    "finite_logits",
    "stable_in_bfloat16",
    "learns_a_tiny_problem",
    "logits_equal",
    "logits_at_the_smallest",
    "resnet50_logits",
)
_ALWAYS_SLOW = ("224px_step", "224px_resnet50_step", "check_names_the_input_that_fits")
# The family representatives keep their equivalence runs in `make test`; the shared
# suite's compiled steps (test_models) of them run with the slow ones.
_SHARED_SUITE = ("finite_logits", "stable_in_bfloat16", "learns_a_tiny_problem")
_REPRESENTATIVES = ("mobilenet_v3_small", "vit_s_16")


def pytest_collection_modifyitems(config, items):
    import re

    for item in items:
        name = item.name
        models = [m for m in SLOW_MODELS if re.search(rf"(?<![a-z0-9]){m}(?![a-z0-9])", name)]
        compiling = any(kind in name for kind in _COMPILING)
        shared = any(kind in name for kind in _SHARED_SUITE)
        representative = any(f"{m}]" in name or f"-{m}" in name for m in _REPRESENTATIVES)
        if (
            any(kind in name for kind in _ALWAYS_SLOW)
            or (models and compiling)
            or (shared and representative)
        ):
            item.add_marker(pytest.mark.slow)
