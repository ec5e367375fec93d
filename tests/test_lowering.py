"""Every lowering of a layer computes what the native XLA op computes: outputs and gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from typedpipe.models.layers.lowering import avg_pool, chosen, conv2d, lowered_as, max_pool


def _both(fn, *args):
    """`fn`'s value and gradient (of a weighted sum, so every output counts) per lowering."""

    def loss(*args):
        out = fn(*args)
        weights = jnp.linspace(-1.0, 1.0, out.size, dtype=out.dtype).reshape(out.shape)
        return (out * weights).sum(), out

    results = {}
    for lowering in ("native", "matmul"):
        with lowered_as(lowering):
            grad_fn = jax.grad(loss, argnums=tuple(range(len(args))), has_aux=True)
            results[lowering] = grad_fn(*args)
    return results["native"], results["matmul"]


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
    ],
)
def test_conv_lowerings_agree(run, size, kernel, stride, padding):
    keys = jax.random.split(jax.random.key(0), 2)
    x = jax.random.normal(keys[0], (2, *size, 3))
    w = jax.random.normal(keys[1], (kernel, kernel, 3, 4))
    native, matmul = run(lambda x, w: _both(lambda x, w: conv2d(x, w, stride, padding), x, w), x, w)
    _close(native, matmul)


@pytest.mark.parametrize("pool", [max_pool, avg_pool])
@pytest.mark.parametrize(
    ("size", "window", "stride", "padding"),
    [
        ((8, 8), 2, 2, "valid"),
        ((9, 7), 2, 2, "valid"),  # ragged edge dropped
        ((9, 9), 3, 3, "valid"),
        ((9, 9), 3, 2, "valid"),  # overlapping: reduce_window in both
        ((9, 9), 2, 2, "same"),  # padded: reduce_window in both
    ],
)
def test_pool_lowerings_agree(run, pool, size, window, stride, padding):
    # Distinct values: no ties, where the max-pool gradients may differ by design.
    x = jax.random.permutation(jax.random.key(1), 2 * size[0] * size[1] * 3).astype(jnp.float32)
    x = x.reshape(2, *size, 3)
    native, matmul = run(lambda x: _both(lambda x: pool(x, window, stride, padding), x), x)
    _close(native, matmul)


def test_the_backend_chooses_and_a_block_forces():
    assert chosen() == ("matmul" if jax.default_backend() == "cpu" else "native")
    with lowered_as("native"):
        assert chosen() == "native"
    with lowered_as("matmul"):
        assert chosen() == "matmul"


def test_matmul_lowering_has_no_convolution_or_window_ops():
    x, w = jnp.ones((2, 8, 8, 3)), jnp.ones((3, 3, 3, 4))

    def net(x, w):
        return max_pool(conv2d(x, w, 1, "valid"), 2, 2, "valid").sum()

    with lowered_as("matmul"):
        text = jax.jit(jax.grad(net)).lower(x, w).as_text()
    assert "convolution" not in text and "reduce_window" not in text
    assert "select_and_scatter" not in text
    with lowered_as("native"):
        text = jax.jit(jax.grad(net)).lower(x, w).as_text()
    assert "convolution" in text and "select_and_scatter" in text


def test_on_cpu_only_a_thin_input_is_convolved_as_a_matmul():
    if jax.default_backend() != "cpu":
        pytest.skip("the choice is the CPU backend's")
    w_thin, w_wide = jnp.ones((3, 3, 3, 8)), jnp.ones((3, 3, 16, 8))
    thin = jax.jit(lambda x: conv2d(x, w_thin, 1, "same")).lower(jnp.ones((2, 8, 8, 3))).as_text()
    wide = jax.jit(lambda x: conv2d(x, w_wide, 1, "same")).lower(jnp.ones((2, 8, 8, 16))).as_text()
    assert "convolution" not in thin and "convolution" in wide
