"""The XLA ops a layer's math lowers to: the fastest correct form for the backend.

On XLA's CPU backend, measured on 2 cores:
- A convolution is XLA's own (Eigen), with YNNPACK's convolutions turned off
  (`typedpipe.runtime.use_xla_cpu_convolutions`), on an input made a buffer of its own
  (`materialized`). resnet20's step (batch 128): 700 ms with YNNPACK's
  convolutions, 420 ms with XLA's, 330 ms on materialized inputs.
- A pooling whose window equals its stride is 3x faster as a reshape and a
  reduction than as `reduce_window`, whose max gradient is `select_and_scatter`.
GPU and TPU keep the native ops, which their compilers tile and fuse well.

Every lowering computes the function of the native one; tests compare outputs
and gradients, eager and jitted. One difference is by design: where several
elements of a max-pool window tie for the maximum, the reshape form shares the
gradient among them and `select_and_scatter` gives it all to the first.
"""

import contextlib
import contextvars
import functools
from collections.abc import Iterator
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jaxtyping import Array, Float

Lowering = Literal["native", "cpu"]

# None: decide from the backend. Set by `lowered_as`, for tests and benchmarks.
_FORCED: contextvars.ContextVar[Lowering | None] = contextvars.ContextVar(
    "typedpipe_lowering", default=None
)


@contextlib.contextmanager
def lowered_as(lowering: Lowering) -> Iterator[None]:
    """Trace every layer inside the block with `lowering`, whatever the backend."""
    token = _FORCED.set(lowering)
    try:
        yield
    finally:
        _FORCED.reset(token)


def chosen() -> Lowering:
    """The lowering layers traced now use: forced, or "cpu" on CPU and "native" elsewhere."""
    forced = _FORCED.get()
    if forced is not None:
        return forced
    return "cpu" if jax.default_backend() == "cpu" else "native"


def _spatial_pads(padding: str | int) -> str | list[tuple[int, int]]:
    """XLA's padding of height and width: "SAME"/"VALID", or `padding` pixels on every side."""
    if isinstance(padding, str):
        return padding.upper()
    return [(padding, padding), (padding, padding)]


def _xla_conv(x: Array, kernel: Array, stride: int, padding: str | int) -> Array:
    return lax.conv_general_dilated(
        x,
        kernel,
        (stride, stride),
        _spatial_pads(padding),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )


def conv2d(
    x: Float[Array, "b h w c"],
    kernel: Float[Array, "k k c f"],
    stride: int,
    padding: str | int,
) -> Float[Array, "b oh ow f"]:
    """A square-kernel 2-D convolution, NHWC: "same", "valid", or `padding` zeros on every side."""
    if chosen() == "native":
        return _xla_conv(x, kernel, stride, padding)
    return _xla_conv(materialized(x), kernel, stride, padding)


def materialized(x: Array) -> Array:
    """`x`, as a buffer of its own that XLA cannot fuse its producers through.

    A convolution's kernel gradient reads its input transposed. XLA's CPU backend
    fuses the input's elementwise producers into that transposed copy, and through
    a residual network's skip connections those reach back to the first block:
    every kernel gradient recomputed every batch norm, relu and sum before it, in
    a cache-hostile order (resnet20's step: 420 ms, 330 ms with this).
    `lax.optimization_barrier` would say this, but XLA's CPU pipeline removes it
    before fusion; a conditional stays, and costs one copy. Its predicate reads
    `x` so that XLA cannot decide it: a NaN first element takes the other branch,
    `x + 0`, equal in value (identical branches would be merged away).
    """
    first = x.reshape(-1)[0]
    return lax.cond(first == first, lambda x: x, lambda x: x + 0, x)


def _windows(x: Array, window: int) -> Array:
    """Non-overlapping windows ("valid", stride == window): `b h w c -> b r window q window c`."""
    b, h, w, c = x.shape
    rows, cols = h // window, w // window
    x = x[:, : rows * window, : cols * window]  # "valid" drops the ragged edge
    return x.reshape(b, rows, window, cols, window, c)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _window_max(x: Array, window: int) -> Array:
    """Max over non-overlapping windows; a window's maxima share its gradient."""
    return _windows(x, window).max(axis=(2, 4))


def _window_max_forward(x: Array, window: int):
    out = _window_max(x, window)
    return out, (x, out)


def _window_max_backward(window: int, saved, g: Array):
    """Autodiff's gradient of `max`, with each window's maxima counted by adding its
    elements one by one: XLA's CPU backend runs the reduction over the window axes
    that autodiff emits several times slower (seed CNN step: 46 -> 38 ms)."""
    x, out = saved
    hit = _windows(x, window) == out[:, :, None, :, None, :]
    count = sum(hit[:, :, i, :, j, :].astype(g.dtype) for i in range(window) for j in range(window))
    share = jnp.where(hit, (g / count)[:, :, None, :, None, :], 0)
    b, rows, _, cols, _, c = share.shape
    grad = share.reshape(b, rows * window, cols * window, c)
    ragged = ((0, 0), (0, x.shape[1] - grad.shape[1]), (0, x.shape[2] - grad.shape[2]), (0, 0))
    return (jnp.pad(grad, ragged),)  # the ragged edge, dropped, gets no gradient


_window_max.defvjp(_window_max_forward, _window_max_backward)


def _reduce_window(
    x: Array, init: float, op, window: int, stride: int, padding: str | int
) -> Array:
    """XLA's pooling op (its max gradient is `select_and_scatter`); padding holds `init`."""
    windows, strides = (1, window, window, 1), (1, stride, stride, 1)
    pads = _spatial_pads(padding)
    if not isinstance(pads, str):
        pads = [(0, 0), *pads, (0, 0)]
    return lax.reduce_window(x, np.array(init, x.dtype), op, windows, strides, pads)


def max_pool(
    x: Float[Array, "b h w c"], window: int, stride: int, padding: str | int
) -> Float[Array, "b oh ow c"]:
    """Max over `window` x `window` windows; padding never wins (it is -inf, as in PyTorch)."""
    if chosen() == "cpu" and stride == window and padding == "valid":
        return _window_max(x, window)
    return _reduce_window(x, -jnp.inf, lax.max, window, stride, padding)


def avg_pool(
    x: Float[Array, "b h w c"], window: int, stride: int, padding: str | int
) -> Float[Array, "b oh ow c"]:
    """Mean over `window` x `window` windows; padding counts as zeros (PyTorch's
    `count_include_pad=True`)."""
    if chosen() == "cpu" and stride == window and padding == "valid":
        return _windows(x, window).mean(axis=(2, 4))
    total = _reduce_window(x, 0.0, lax.add, window, stride, padding)
    # A Python float divides weakly typed, in the input's dtype (strict promotion).
    return total / float(window * window)
