"""Layout translations: a tensor as PyTorch stores it, turned into the array a layer holds.

PyTorch stores a convolution kernel as `out in kh kw` and a linear weight as
`out in`; flax holds `kh kw in out` and `in out`. Each `Layout` is a pure NumPy
function from the file's array to ours, with its inverse shape rule (the file's
shape from ours), so the shapes a file must have are known from an abstract
model, before any tensor is read. A layer names its layouts in `tensors()`;
`register_layout` adds one.
"""

import dataclasses
import math
from collections.abc import Callable

import numpy as np

from typedpipe.registry import Registry

Shape = tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class Layout:
    """One translation: `forward(file array, our shape) -> our array`, and `file_shape(ours)`.

    Example:
        >>> LAYOUTS.get("linear").file_shape((512, 10))
        (10, 512)
    """

    name: str
    forward: Callable[[np.ndarray, Shape], np.ndarray]
    file_shape: Callable[[Shape], Shape]
    doc: str


#: Every layout a `TensorMap` can name.
LAYOUTS: Registry[Layout] = Registry("tensor layout", key="layout", table="Layer.tensors()")


def register_layout(layout: Layout) -> Layout:
    """Make `layout` nameable from a layer's `tensors()` as `layout.name`."""
    LAYOUTS.register(layout.name, layout)
    return layout


def _reversed_axes(shape: Shape) -> Shape:
    return tuple(reversed(shape))


def _conv_file_shape(shape: Shape) -> Shape:
    kh, kw, fan_in, out = shape
    return (out, fan_in, kh, kw)


def _conv(x: np.ndarray, shape: Shape) -> np.ndarray:
    return x.transpose(2, 3, 1, 0)


def _heads_in_file_shape(shape: Shape) -> Shape:
    features, heads, head_dim = shape
    return (heads * head_dim, features)


def _heads_out_file_shape(shape: Shape) -> Shape:
    heads, head_dim, features = shape
    return (features, heads * head_dim)


register_layout(
    Layout("identity", lambda x, shape: x, lambda shape: shape, "as stored (biases, norms)")
)
register_layout(
    Layout("oihw_hwio", _conv, _conv_file_shape, "conv kernel: out in kh kw -> kh kw in out")
)
# PyTorch and flax both store a grouped kernel with in/groups input channels (a depthwise
# one with 1): the same transpose, named apart so a layer's map says what it holds.
register_layout(
    Layout("grouped", _conv, _conv_file_shape, "grouped conv: out in/g kh kw -> kh kw in/g out")
)
register_layout(
    Layout("depthwise", _conv, _conv_file_shape, "depthwise conv: out 1 kh kw -> kh kw 1 out")
)
register_layout(
    Layout("linear", lambda x, shape: x.T, _reversed_axes, "linear weight: out in -> in out")
)
# Attention projections held per head (flax's MultiHeadAttention): the query, key and
# value kernels are `features heads head_dim`, the output kernel `heads head_dim features`.
register_layout(
    Layout(
        "linear_heads",
        lambda x, shape: x.T.reshape(shape),
        _heads_in_file_shape,
        "q/k/v projection: heads*head_dim in -> in heads head_dim",
    )
)
register_layout(
    Layout(
        "heads_linear",
        lambda x, shape: x.T.reshape(shape),
        _heads_out_file_shape,
        "output projection: out heads*head_dim -> heads head_dim out",
    )
)
register_layout(
    Layout(
        "heads_bias",
        lambda x, shape: x.reshape(shape),
        lambda shape: (math.prod(shape),),
        "q/k/v bias: heads*head_dim -> heads head_dim",
    )
)


# A per-channel parameter PyTorch broadcasts over `c h w` (ConvNeXt's layer scale).
register_layout(
    Layout(
        "channels_11",
        lambda x, shape: x.reshape(shape),
        lambda shape: (*shape, 1, 1),
        "per-channel parameter: c 1 1 -> c",
    )
)


def linear_after_flatten(height: int, width: int, channels: int) -> Layout:
    """`linear` for a dense layer fed by a flattened feature map: PyTorch flattens
    `c h w`, typedpipe `h w c`, so the kernel's input rows are reordered too.

    Example:
        >>> torch_weight = np.arange(2 * 12).reshape(2, 12)     # out, c*h*w with c=3, h=w=2
        >>> linear_after_flatten(2, 2, 3).forward(torch_weight, (12, 2)).shape
        (12, 2)
    """

    def forward(x: np.ndarray, shape: Shape) -> np.ndarray:
        out = x.shape[0]
        return x.reshape(out, channels, height, width).transpose(2, 3, 1, 0).reshape(shape)

    return Layout(
        f"linear_chw_{height}x{width}x{channels}",
        forward,
        _reversed_axes,
        "linear weight after a c h w flatten: out c*h*w -> h*w*c out",
    )


@dataclasses.dataclass(frozen=True)
class TensorMap:
    """Where one tensor of a PyTorch state dict goes in a layer.

    Args:
        source: the tensor's name in the file, relative to the layer (`"weight"`,
            `"downsample.1.running_mean"`); the model's file names are the layer's
            `name` + "." + this. `""`: the tensor named as the layer is, a model-level
            parameter such as a ViT's `class_token` or `pos_embed`.
        target: the path of the nnx Variable inside the layer (`("conv", "kernel")`).
        layout: a registered `Layout` (`"oihw_hwio"`, `"linear"`, `"identity"`...).
        part: `(index, count)`: this target is slice `index` of `count` equal slices
            of the source along its first axis, taken before the layout. A fused
            projection is several maps of one source, each one part: the source's
            shape is the part's file shape with the first axis `count` times as long.

    Example: a fused `qkv` projection (timm `attn.qkv.weight`, torchvision
    `self_attention.in_proj_weight`, both `3*heads*head_dim in`) into flax's
    per-head query, key and value kernels:

        >>> [TensorMap("qkv.weight", (name, "kernel"), "linear_heads", part=(i, 3))
        ...  for i, name in enumerate(("query", "key", "value"))][1].part
        (1, 3)
    """

    source: str
    target: tuple[str | int, ...]
    layout: str = "identity"
    part: tuple[int, int] = (0, 1)


def nested(prefix: str, attribute: str, maps: list[TensorMap]) -> list[TensorMap]:
    """The maps of a sub-layer held as `attribute`, its file names under `prefix`.

    Example:
        >>> nested("bn1", "norm1", [TensorMap("weight", ("norm", "scale"))])[0].target
        ('norm1', 'norm', 'scale')
    """
    return [
        TensorMap(f"{prefix}.{m.source}", (attribute, *m.target), m.layout, m.part) for m in maps
    ]
