"""Every lowering of a layer computes what the native XLA op computes: outputs and gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from typedpipe.models.layers import lowering as lowering_module
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
    """An image layer's step: the image's own gradient is pruned, and with it the one
    convolution the matmul lowering keeps (XLA's input gradient)."""
    x, w = jnp.ones((2, 8, 8, 3)), jnp.ones((3, 3, 3, 4))

    def net(w):
        return max_pool(conv2d(x, w, 1, "valid"), 2, 2, "valid").sum()

    def compiled(lowering):
        with lowered_as(lowering):
            return jax.jit(jax.grad(net)).lower(w).compile().as_text()

    text = compiled("matmul")
    # XLA rewrites max-pool's gradient, `select-and-scatter`, as a scatter.
    assert "convolution(" not in text and "reduce-window" not in text and "scatter" not in text
    text = compiled("native")
    assert "convolution(" in text and "scatter" in text


@pytest.mark.parametrize(
    ("batch", "size", "kernel", "stride", "padding"),
    [
        (1, (9, 9), 3, 1, "same"),
        (6, (9, 9), 3, 1, "valid"),
        (3, (10, 7), 3, 2, "same"),
        (4, (8, 8), 1, 2, "valid"),
        (5, (6, 6), 4, 2, "same"),
    ],
)
@pytest.mark.parametrize("chunk_bytes", [1, lowering_module.CHUNK_BYTES])
def test_wide_conv_kernel_gradient_agrees(
    run, monkeypatch, batch, size, kernel, stride, padding, chunk_bytes
):
    """Wider inputs keep XLA's convolution, and take their kernel gradient a few images at a
    time: forced to one image of patches per chunk, so that the loop runs; or, where the
    patches fit one chunk, from XLA."""
    monkeypatch.setattr(lowering_module, "CHUNK_BYTES", chunk_bytes)
    keys = jax.random.split(jax.random.key(2), 2)
    x = jax.random.normal(keys[0], (batch, *size, 8))
    w = jax.random.normal(keys[1], (kernel, kernel, 8, 5))
    native, matmul = run(lambda x, w: _both(lambda x, w: conv2d(x, w, stride, padding), x, w), x, w)
    _close(native, matmul)


def test_kernel_gradient_keeps_a_half_precision_kernel_dtype():
    x = jnp.ones((4, 6, 6, 8), jnp.bfloat16)
    w = jnp.ones((3, 3, 8, 2), jnp.bfloat16)
    with lowered_as("matmul"):
        grad = jax.jit(jax.grad(lambda w: conv2d(x, w, 1, "same").astype(jnp.float32).sum()))(w)
    assert grad.dtype == jnp.bfloat16
    # Summed in float32: the centre tap sees every pixel of every image, 4 * 36.
    assert float(grad[1, 1, 0, 0]) == 144.0


def test_max_pool_shares_a_tied_window_gradient_as_autodiff_does(run):
    """Relu zeros and repeated pixel values tie: the gradient is max's own, shared."""
    x = jnp.array([[1.0, 1.0, 0.0, 3.0], [0.0, 1.0, 0.0, 0.0], [2.0, 2.0, 0.0, 0.0]])
    x = jnp.stack([x, -x])[:, :, :, None]  # 2 x 3 x 4 x 1: a ragged last row

    def reference(x):
        return x[:, :2].reshape(x.shape[0], 1, 2, 2, 2, x.shape[3]).max(axis=(2, 4))

    want = jax.grad(lambda x: (reference(x) * jnp.arange(1.0, 5.0).reshape(2, 1, 2, 1)).sum())(x)
    with lowered_as("matmul"):
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


def test_on_cpu_only_a_thin_input_is_convolved_as_a_matmul():
    if jax.default_backend() != "cpu":
        pytest.skip("the choice is the CPU backend's")
    w_thin, w_wide = jnp.ones((3, 3, 3, 8)), jnp.ones((3, 3, 16, 8))
    thin = jax.jit(lambda x: conv2d(x, w_thin, 1, "same")).lower(jnp.ones((2, 8, 8, 3))).as_text()
    wide = jax.jit(lambda x: conv2d(x, w_wide, 1, "same")).lower(jnp.ones((2, 8, 8, 16))).as_text()
    assert "convolution" not in thin and "convolution" in wide
