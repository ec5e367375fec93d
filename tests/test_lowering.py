"""Every lowering of a layer computes what the native XLA op computes: outputs and gradients."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from typedpipe.models.layers.lowering import (
    avg_pool,
    chosen,
    conv2d,
    lowered_as,
    materialized,
    max_pool,
)
from typedpipe.runtime import XLA_CPU_FLAG, use_xla_cpu_convolutions


def _both(fn, *args):
    """`fn`'s value and gradient (of a weighted sum, so every output counts) per lowering."""

    def loss(*args):
        out = fn(*args)
        weights = jnp.linspace(-1.0, 1.0, out.size, dtype=out.dtype).reshape(out.shape)
        return (out * weights).sum(), out

    results = {}
    for lowering in ("native", "cpu"):
        with lowered_as(lowering):
            grad_fn = jax.grad(loss, argnums=tuple(range(len(args))), has_aux=True)
            results[lowering] = grad_fn(*args)
    return results["native"], results["cpu"]


def _close(reference, candidate):
    for want, got in zip(jax.tree.leaves(reference), jax.tree.leaves(candidate), strict=True):
        assert got.shape == want.shape and got.dtype == want.dtype
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("size", "kernel", "stride", "padding"),
    [
        ((9, 9), 3, 1, "valid"),
        ((9, 9), 3, 1, "same"),
        ((10, 7), 3, 2, "same"),
        ((10, 7), 3, 2, "valid"),
        ((8, 8), 1, 1, "same"),
        ((8, 8), 1, 2, "valid"),
        ((11, 12), 5, 3, "same"),
        ((6, 6), 4, 2, "same"),  # even kernel: XLA puts the extra pad after
        ((9, 9), 3, 1, 1),  # explicit pixels on every side, as PyTorch's padding=1
        ((10, 7), 7, 2, 3),  # torchvision's ResNet stem
        ((6, 6), 4, 2, 2),  # even kernel, symmetric (unlike "same")
        ((8, 8), 1, 2, 0),
    ],
)
def test_conv_lowerings_agree(run, size, kernel, stride, padding):
    keys = jax.random.split(jax.random.key(0), 2)
    x = jax.random.normal(keys[0], (2, *size, 3))
    w = jax.random.normal(keys[1], (kernel, kernel, 3, 4))
    native, cpu = run(lambda x, w: _both(lambda x, w: conv2d(x, w, stride, padding), x, w), x, w)
    _close(native, cpu)


@pytest.mark.parametrize("pool", [max_pool, avg_pool])
@pytest.mark.parametrize(
    ("size", "window", "stride", "padding"),
    [
        ((8, 8), 2, 2, "valid"),
        ((9, 7), 2, 2, "valid"),  # ragged edge dropped
        ((9, 9), 3, 3, "valid"),
        ((9, 9), 3, 2, "valid"),  # overlapping: reduce_window in both
        ((9, 9), 2, 2, "same"),  # padded: reduce_window in both
        ((9, 9), 3, 2, 1),  # torchvision's ResNet max pool
        ((8, 8), 2, 2, 1),  # stride == window, padded: reduce_window in both
    ],
)
def test_pool_lowerings_agree(run, pool, size, window, stride, padding):
    # Distinct values: no ties, where the max-pool gradients may differ by design.
    x = jax.random.permutation(jax.random.key(1), 2 * size[0] * size[1] * 3).astype(jnp.float32)
    x = x.reshape(2, *size, 3)
    native, cpu = run(lambda x: _both(lambda x: pool(x, window, stride, padding), x), x)
    _close(native, cpu)


def test_the_backend_chooses_and_a_block_forces():
    assert chosen() == ("cpu" if jax.default_backend() == "cpu" else "native")
    with lowered_as("native"):
        assert chosen() == "native"
    with lowered_as("cpu"):
        assert chosen() == "cpu"


def test_cpu_lowering_convolves_a_materialized_input_and_pools_by_reshape():
    """The CPU step keeps XLA's convolutions, each reading a conditional's buffer, and
    has no window op; the native step has no conditional."""
    x, w = jnp.ones((2, 8, 8, 3)), jnp.ones((3, 3, 3, 4))

    def net(x, w):
        return max_pool(conv2d(x, w, 1, "valid"), 2, 2, "valid").sum()

    def compiled(lowering):
        with lowered_as(lowering):
            return jax.jit(jax.grad(net, argnums=(0, 1))).lower(x, w).compile().as_text()

    text = compiled("cpu")
    # XLA rewrites max-pool's gradient, `select-and-scatter`, as a scatter.
    assert "convolution(" in text and " conditional(" in text
    assert "reduce-window" not in text and "scatter" not in text
    text = compiled("native")
    assert "convolution(" in text and "scatter" in text and " conditional(" not in text


@pytest.mark.parametrize("first", [1.5, -0.0, np.nan, np.inf])
def test_materialized_is_its_input_whichever_branch_runs(run, first):
    """A NaN first element takes the other branch: the values, NaN included, are the
    same, and so is the gradient."""
    x = jnp.arange(12.0).reshape(2, 3, 2).at[0, 0, 0].set(first)
    np.testing.assert_array_equal(np.asarray(run(materialized, x)), np.asarray(x))
    grad = run(jax.grad(lambda x: (materialized(x) * x).sum()), x)
    np.testing.assert_array_equal(np.asarray(grad), 2 * np.asarray(x))


def test_cpu_convolution_flag_is_set_once_and_a_users_choice_kept(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_enable_fast_math=false")
    use_xla_cpu_convolutions()
    use_xla_cpu_convolutions()
    assert os.environ["XLA_FLAGS"] == f"--xla_cpu_enable_fast_math=false {XLA_CPU_FLAG}"
    own = "--xla_cpu_experimental_ynn_fusion_type=+individual_convolution"
    monkeypatch.setenv("XLA_FLAGS", own)
    use_xla_cpu_convolutions()
    assert os.environ["XLA_FLAGS"] == own


def test_cpu_convolution_flag_is_left_out_for_another_jaxlib(monkeypatch):
    """XLA aborts on a flag it does not know: another jaxlib gets none."""
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    monkeypatch.setattr(jax, "__version_info__", (0, 11, 0))
    use_xla_cpu_convolutions()
    assert "XLA_FLAGS" not in os.environ


def test_max_pool_shares_a_tied_window_gradient_as_autodiff_does(run):
    """Relu zeros and repeated pixel values tie: the gradient is max's own, shared."""
    x = jnp.array([[1.0, 1.0, 0.0, 3.0], [0.0, 1.0, 0.0, 0.0], [2.0, 2.0, 0.0, 0.0]])
    x = jnp.stack([x, -x])[:, :, :, None]  # 2 x 3 x 4 x 1: a ragged last row

    def reference(x):
        return x[:, :2].reshape(x.shape[0], 1, 2, 2, 2, x.shape[3]).max(axis=(2, 4))

    want = jax.grad(lambda x: (reference(x) * jnp.arange(1.0, 5.0).reshape(2, 1, 2, 1)).sum())(x)
    with lowered_as("cpu"):
        got = run(
            jax.grad(
                lambda x: (
                    max_pool(x, 2, 2, "valid") * jnp.arange(1.0, 5.0).reshape(2, 1, 2, 1)
                ).sum()
            ),
            x,
        )
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    third = np.float32(1 / 3)  # the first window's three maxima share its weight, 1
    assert float(got[0, 0, 0, 0]) == float(got[0, 0, 1, 0]) == float(got[0, 1, 1, 0]) == third
