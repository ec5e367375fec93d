"""The XLA ops a layer's math lowers to: the fastest correct form for its static
shapes and the backend.

On XLA's CPU backend, measured on 2 cores (fwd + both gradients):
- A convolution of an image with few channels (at most `FEW_CHANNELS`: the
  first layer) is 2.5 to 5x faster as its patches times one matrix than as
  `conv_general_dilated`. With more channels XLA's forward and input gradient
  win (the patches' concatenation costs more than it saves).
- XLA's kernel gradient is slow at any width (a convolution over the whole
  image, operands copied transposed); `g^T @ patches`, a few images at a time,
  is 1.5 to 3x faster (resnet20's step on one device: 610 -> 470 ms).
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


def _same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """XLA's "SAME" padding of one axis: the output has ceil(size / stride) positions."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _xla_conv(x: Array, kernel: Array, stride: int, padding: str) -> Array:
    return lax.conv_general_dilated(
        x, kernel, (stride, stride), padding.upper(), dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


def conv2d(
    x: Float[Array, "b h w c"],
    kernel: Float[Array, "k k c f"],
    stride: int,
    padding: str,
) -> Float[Array, "b oh ow f"]:
    """A square-kernel 2-D convolution, NHWC, "same" or "valid" padding."""
    if chosen() == "native":
        return _xla_conv(x, kernel, stride, padding)
    return _conv(x, kernel, stride, padding)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv(x: Array, kernel: Array, stride: int, padding: str) -> Array:
    """The CPU convolution: a thin input's as its patches times one matrix, a wider one's
    as XLA's; the kernel gradient from patches, a few images at a time (`_kernel_grad`)."""
    return _conv_forward(x, kernel, stride, padding)[0]


def _conv_forward(x: Array, kernel: Array, stride: int, padding: str):
    if x.shape[-1] > FEW_CHANNELS:
        return _xla_conv(x, kernel, stride, padding), (x, kernel, None)
    size, _, channels, features = kernel.shape
    patches = _patches(_padded(x, size, stride, padding), size, stride)
    # A thin input's patches are small enough to keep for the kernel gradient.
    return patches @ kernel.reshape(size * size * channels, features), (x, kernel, patches)


def _conv_backward(stride: int, padding: str, saved, g: Array):
    x, kernel, patches = saved
    # XLA's input gradient (a transposed convolution) is fast; an image's is pruned.
    _, input_grad = jax.vjp(lambda x: _xla_conv(x, kernel, stride, padding), x)
    if patches is not None:
        return *input_grad(g), _kernel_grad(patches, g, kernel, lambda patches: patches)
    size = kernel.shape[0]
    if g.shape[0] * _image_patch_bytes(g, kernel, x.dtype) <= CHUNK_BYTES:
        # Patches that fit one chunk: XLA's own gradient is as fast (digits' convolutions).
        _, kernel_grad = jax.vjp(lambda kernel: _xla_conv(x, kernel, stride, padding), kernel)
        return *input_grad(g), *kernel_grad(g)
    x = _padded(x, size, stride, padding)
    return *input_grad(g), _kernel_grad(x, g, kernel, lambda x: _patches(x, size, stride))


_conv.defvjp(_conv_forward, _conv_backward)


def _padded(x: Array, size: int, stride: int, padding: str) -> Array:
    """`x` with the zeros a "same" convolution reads around it."""
    if padding != "same":
        return x
    rows, cols = (_same_pads(n, size, stride) for n in x.shape[1:3])
    return jnp.pad(x, ((0, 0), rows, cols, (0, 0)))


def _patches(x: Array, size: int, stride: int) -> Array:
    """Each output position's input window, flattened in the kernel's (row, col, channel)
    order: `b h w c -> b oh ow (k k c)`, one strided slice per kernel tap."""
    out_h = (x.shape[1] - size) // stride + 1
    out_w = (x.shape[2] - size) // stride + 1
    taps = [
        x[:, i : i + (out_h - 1) * stride + 1 : stride, j : j + (out_w - 1) * stride + 1 : stride]
        for i in range(size)
        for j in range(size)
    ]
    return taps[0] if len(taps) == 1 else jnp.concatenate(taps, axis=-1)


#: Bytes of patches the kernel gradient builds at a time: a few images' worth, which
#: stay in cache between being written and being multiplied. A wider input whose
#: patches fit in one chunk keeps XLA's kernel gradient.
CHUNK_BYTES = 8 * 2**20


def _image_patch_bytes(g: Array, kernel: Array, dtype) -> int:
    """Bytes of one image's patches: `k k c` values for each of `g`'s output positions."""
    size, _, channels, _ = kernel.shape
    return g.shape[1] * g.shape[2] * size * size * channels * np.dtype(dtype).itemsize


def _kernel_grad(source: Array, g: Array, kernel: Array, patches_of) -> Array:
    """The kernel's gradient, `g^T @ patches` summed over the batch a chunk of images at a time;
    `patches_of` makes a chunk's patches from its rows of `source`.

    XLA's CPU backend computes a convolution's kernel gradient as a second
    convolution whose window is the whole image, after copying both operands
    transposed: 70% of resnet20's step. The whole batch's patches are no better,
    being 9x the input and out of cache by the time they are multiplied; a
    chunk's are not.
    """
    size, _, channels, features = kernel.shape
    batch = g.shape[0]
    taps = size * size * channels

    def product(source: Array, g: Array) -> Array:
        # In float32: the sum runs over every pixel of the batch (and XLA's CPU
        # dot has no bfloat16 x bfloat16 -> float32).
        patches = patches_of(source).reshape(-1, taps).astype(jnp.float32)
        return g.reshape(-1, features).T.astype(jnp.float32) @ patches

    image_bytes = _image_patch_bytes(g, kernel, source.dtype)
    fits = (d for d in range(1, batch + 1) if batch % d == 0 and d * image_bytes <= CHUNK_BYTES)
    chunk = max(fits, default=1)
    steps = batch // chunk
    if steps == 1:
        total = product(source, g)
    else:
        # Chunk i holds images i, i + steps, ...: the loop runs over an axis that a
        # data-parallel split of the batch leaves whole on every device.
        sources = source.reshape(chunk, steps, *source.shape[1:])
        gs = g.reshape(chunk, steps, *g.shape[1:])

        def add_chunk(i: Array, total: Array) -> Array:
            source_i = lax.dynamic_index_in_dim(sources, i, axis=1, keepdims=False)
            g_i = lax.dynamic_index_in_dim(gs, i, axis=1, keepdims=False)
            return total + product(source_i, g_i)

        total = lax.fori_loop(0, steps, add_chunk, jnp.zeros((features, taps), jnp.float32))
    return total.T.reshape(kernel.shape).astype(kernel.dtype)


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


def _reduce_window(x: Array, init: float, op, window: int, stride: int, padding: str) -> Array:
    """XLA's pooling op (its max gradient is `select_and_scatter`)."""
    windows, strides = (1, window, window, 1), (1, stride, stride, 1)
    return lax.reduce_window(x, np.array(init, x.dtype), op, windows, strides, padding.upper())


def max_pool(
    x: Float[Array, "b h w c"], window: int, stride: int, padding: str
) -> Float[Array, "b oh ow c"]:
    """Max over `window` x `window` windows."""
    if chosen() == "matmul" and stride == window and padding == "valid":
        return _window_max(x, window)
    return _reduce_window(x, -jnp.inf, lax.max, window, stride, padding)


def avg_pool(
    x: Float[Array, "b h w c"], window: int, stride: int, padding: str
) -> Float[Array, "b oh ow c"]:
    """Mean over `window` x `window` windows; a "same" window's padding counts as zeros."""
    if chosen() == "matmul" and stride == window and padding == "valid":
        return _windows(x, window).mean(axis=(2, 4))
    total = _reduce_window(x, 0.0, lax.add, window, stride, padding)
    # A Python float divides weakly typed, in the input's dtype (strict promotion).
    return total / float(window * window)
