"""Strict JAX for every test: several CPU devices, no implicit rank or dtype promotion."""

import os

# Before JAX is imported anywhere: four host devices to exercise sharding.
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_numpy_dtype_promotion", "strict")


@pytest.fixture(params=["eager", "jit"])
def run(request):
    """Call a function eagerly and under jax.jit: the two differ more than one expects."""

    def call(fn, *args):
        return jax.jit(fn)(*args) if request.param == "jit" else fn(*args)

    return call
