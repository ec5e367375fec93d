"""The XLA ops a layer's math lowers to: the fastest correct form for its static
shapes and the backend.

On XLA's CPU backend, measured on 2 cores (fwd + both gradients):
- A convolution of an image with few channels (at most `FEW_CHANNELS`: the
  first layer) is 2.5 to 5x faster as its patches times one matrix, with the
  kernel gradient as one `g^T @ patches`, than as `conv_general_dilated`, whose
  filter gradient is slow for thin inputs. With more channels the native
  convolution wins (the patches' concatenation costs more than it saves).
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
from collections.abc import Iterator
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jaxtyping import Array, Float

Lowering = Literal["native", "matmul"]

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


#: Input channels up to which a CPU convolution runs as patches times a matrix.
FEW_CHANNELS = 4


def chosen() -> Lowering:
    """The lowering layers traced now use: forced, or "matmul" on CPU and "native" elsewhere."""
    forced = _FORCED.get()
    if forced is not None:
        return forced
    return "matmul" if jax.default_backend() == "cpu" else "native"


def _conv_as_matmul(channels: int) -> bool:
    """Forced either way, or on CPU for an input of few channels."""
    if _FORCED.get() is not None:
        return _FORCED.get() == "matmul"
    return chosen() == "matmul" and channels <= FEW_CHANNELS


def _same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """XLA's "SAME" padding of one axis: the output has ceil(size / stride) positions."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def conv2d(
    x: Float[Array, "b h w c"],
    kernel: Float[Array, "k k c f"],
    stride: int,
    padding: str,
) -> Float[Array, "b oh ow f"]:
    """A square-kernel 2-D convolution, NHWC, "same" or "valid" padding."""
    if not _conv_as_matmul(x.shape[-1]):
        return lax.conv_general_dilated(
            x,
            kernel,
            (stride, stride),
            padding.upper(),
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )
    size, _, channels, features = kernel.shape
    if padding == "same":
        rows, cols = (_same_pads(n, size, stride) for n in x.shape[1:3])
        if rows != (0, 0) or cols != (0, 0):
            x = jnp.pad(x, ((0, 0), rows, cols, (0, 0)))
    out_h = (x.shape[1] - size) // stride + 1
    out_w = (x.shape[2] - size) // stride + 1
    # One strided slice per kernel tap, stacked along the channels in the
    # kernel's (row, col, channel) order: the convolution is then one matmul.
    taps = [
        x[:, i : i + (out_h - 1) * stride + 1 : stride, j : j + (out_w - 1) * stride + 1 : stride]
        for i in range(size)
        for j in range(size)
    ]
    patches = taps[0] if len(taps) == 1 else jnp.concatenate(taps, axis=-1)
    return _patches_times(patches, kernel.reshape(size * size * channels, features))


@jax.custom_vjp
def _patches_times(patches: Array, kernel: Array) -> Array:
    """`patches @ kernel`, whose kernel gradient is one (features x taps) matmul.

    Autodiff's kernel gradient contracts the patches' long pixel axis in a
    layout for which XLA's CPU backend first copies the output gradient
    transposed; computing `g^T @ patches` and transposing the small result
    is about twice as fast (seed CNN step: 170 -> 100 ms).
    """
    return patches @ kernel


def _patches_times_forward(patches: Array, kernel: Array):
    return patches @ kernel, (patches, kernel)


def _patches_times_backward(saved, g: Array):
    patches, kernel = saved
    rows = g.reshape(-1, g.shape[-1])
    kernel_grad = (rows.T @ patches.reshape(-1, patches.shape[-1])).T
    return g @ kernel.T, kernel_grad  # unused gradients (the images') are pruned by XLA


_patches_times.defvjp(_patches_times_forward, _patches_times_backward)


def _reshape_pool(x: Array, window: int, reduce) -> Array:
    """Pool non-overlapping windows ("valid", stride == window) as a reshape and a reduction."""
    b, h, w, c = x.shape
    rows, cols = h // window, w // window
    x = x[:, : rows * window, : cols * window]  # "valid" drops the ragged edge
    return reduce(x.reshape(b, rows, window, cols, window, c), axis=(2, 4))


def _reduce_window(x: Array, init: float, op, window: int, stride: int, padding: str) -> Array:
    """XLA's pooling op (its max gradient is `select_and_scatter`)."""
    windows, strides = (1, window, window, 1), (1, stride, stride, 1)
    return lax.reduce_window(x, np.array(init, x.dtype), op, windows, strides, padding.upper())


def max_pool(
    x: Float[Array, "b h w c"], window: int, stride: int, padding: str
) -> Float[Array, "b oh ow c"]:
    """Max over `window` x `window` windows."""
    if chosen() == "matmul" and stride == window and padding == "valid":
        return _reshape_pool(x, window, jnp.max)
    return _reduce_window(x, -jnp.inf, lax.max, window, stride, padding)


def avg_pool(
    x: Float[Array, "b h w c"], window: int, stride: int, padding: str
) -> Float[Array, "b oh ow c"]:
    """Mean over `window` x `window` windows; a "same" window's padding counts as zeros."""
    if chosen() == "matmul" and stride == window and padding == "valid":
        return _reshape_pool(x, window, jnp.mean)
    total = _reduce_window(x, 0.0, lax.add, window, stride, padding)
    # A Python float divides weakly typed, in the input's dtype (strict promotion).
    return total / float(window * window)
