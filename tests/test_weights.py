"""Weights from a file: PyTorch state dicts in safetensors, and typedpipe bundles.

Reference nets are built in plain PyTorch (random weights, nothing downloaded)
with the layers in typedpipe's order, saved with `safetensors.torch.save_file`,
imported, and their eval-mode logits compared. Faulty files (partial, extra,
misshapen, pickled, garbage, lying headers) must each be one diagnostic naming
the tensors, found from the header alone.
"""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jaxtyping import Array, Float

from typedpipe.contracts import contract
from typedpipe.models import LAYERS, Layer, build_model
from typedpipe.models.layouts import LAYOUTS, TensorMap, linear_after_flatten
from typedpipe.models.weights import (
    expected_tensors,
    read_index,
)

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")
nn = torch.nn

SEQUENTIAL = (
    {"type": "conv", "features": 6, "kernel": 3, "padding": "valid", "activation": "relu"},
    {"type": "batchnorm"},
    {"type": "conv", "features": 4, "kernel": 3, "padding": "valid", "use_bias": False},
    {"type": "flatten"},
    {"type": "dense", "features": 12, "activation": "tanh"},
    {"type": "dropout", "rate": 0.3},
    {"type": "dense", "features": 5},
)


class SmallCNN(nn.Module):
    """typedpipe's small_cnn in PyTorch, its modules named as build_model names the layers."""

    def __init__(self, channels: int = 1, classes: int = 10):
        super().__init__()
        self.conv0 = nn.Conv2d(channels, 32, 3, padding="same")
        self.batchnorm1 = nn.BatchNorm2d(32)
        self.conv2 = nn.Conv2d(32, 32, 3, padding="same")
        self.conv4 = nn.Conv2d(32, 64, 3, padding="same")
        self.batchnorm5 = nn.BatchNorm2d(64)
        self.conv6 = nn.Conv2d(64, 64, 3, padding="same")
        self.dense9 = nn.Linear(64, classes)

    def forward(self, x):
        x = self.batchnorm1(torch.relu(self.conv0(x)))
        x = nn.functional.max_pool2d(torch.relu(self.conv2(x)), 2)
        x = self.batchnorm5(torch.relu(self.conv4(x)))
        return self.dense9(torch.relu(self.conv6(x)).mean((2, 3)))


class Flattening(nn.Module):
    """`SEQUENTIAL` in PyTorch: a dense layer after a flatten of c h w (typedpipe: h w c)."""

    def __init__(self):
        super().__init__()
        self.conv0 = nn.Conv2d(3, 6, 3)
        self.batchnorm1 = nn.BatchNorm2d(6)
        self.conv2 = nn.Conv2d(6, 4, 3, bias=False)
        self.dense4 = nn.Linear(4 * 5 * 5, 12)
        self.dense6 = nn.Linear(12, 5)

    def forward(self, x):
        x = self.conv2(self.batchnorm1(torch.relu(self.conv0(x))))
        return self.dense6(torch.tanh(self.dense4(x.flatten(1))))


class Block(nn.Module):
    """typedpipe's `residual` layer (stride 1, a projected shortcut) in PyTorch."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x):
        y = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        return torch.relu(y + self.shortcut(x))


class ResidualNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.block = Block(8, 16)
        self.fc = nn.Linear(16, 4)

    def forward(self, x):
        return self.fc(self.block(self.stem(x)).mean((2, 3)))


RESIDUAL = (
    {"type": "conv", "features": 8, "name": "stem"},
    {"type": "residual", "features": 16, "name": "block"},
    {"type": "gap"},
    {"type": "dense", "features": 4, "name": "fc"},
)


def save(state: dict, path: Path) -> Path:
    safetensors_torch.save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


def abstract(name="small_cnn", shape=(8, 8, 1), classes=10, layers=()):
    return nnx.eval_shape(lambda: build_model(name, shape, classes, layers, rngs=nnx.Rngs(0)))


@pytest.fixture(scope="module")
def small_file(tmp_path_factory, reference):
    net = SmallCNN()
    reference.randomize_norms(net)
    return net, save(net.state_dict(), tmp_path_factory.mktemp("w") / "small.safetensors")


# --- equivalence -----------------------------------------------------------------------------


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_small_cnn_logits_equal_pytorch(reference, jit):
    torch.manual_seed(0)
    reference.assert_same_logits(SmallCNN(), "small_cnn", (8, 8, 1), 10, jit=jit)


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_a_dense_layer_after_a_flatten_reads_pytorch_channel_order(reference, jit):
    torch.manual_seed(1)
    reference.assert_same_logits(
        Flattening(), "sequential", (9, 9, 3), 5, layers=SEQUENTIAL, batch=3, jit=jit
    )


def test_a_residual_block_with_a_projection_equals_pytorch(reference):
    torch.manual_seed(2)
    reference.assert_same_logits(ResidualNet(), "sequential", (6, 6, 3), 4, layers=RESIDUAL)


def test_expected_tensors_are_pytorch_names_and_shapes():
    expected = expected_tensors(abstract())
    state = SmallCNN().state_dict()
    wanted = {k: tuple(v.shape) for k, v in state.items() if "num_batches" not in k}
    assert {k: shape for k, (shape, _) in expected.items()} == wanted
    assert {dtype for _, dtype in expected.values()} == {"F32"}


def test_the_header_is_read_without_the_data(small_file):
    _, path = small_file
    index = read_index(path)
    assert index["conv0.weight"] == ((32, 1, 3, 3), "F32")
    assert index["batchnorm1.num_batches_tracked"] == ((), "I64")


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float64"])
def test_narrow_and_wide_floats_become_the_variable_dtype(small_file, tmp_path, dtype):
    net, _ = small_file
    state = {
        k: v.to(getattr(torch, dtype)) if v.is_floating_point() else v
        for k, v in net.state_dict().items()
    }
    path = save(state, tmp_path / f"{dtype}.safetensors")
    model = build_model("small_cnn", (8, 8, 1), 10, weights=path, rngs=nnx.Rngs(0))
    kernel = model.layers[0].conv.kernel[...]
    assert kernel.dtype == jnp.float32
    want = state["conv0.weight"].to(torch.float32).numpy().transpose(2, 3, 1, 0)
    np.testing.assert_array_equal(np.asarray(kernel), want)


# --- layouts ---------------------------------------------------------------------------------


@pytest.mark.parametrize("groups", [1, 2, 6])
def test_grouped_and_depthwise_kernels_convolve_as_pytorch(groups, run):
    layout = LAYOUTS.get({1: "oihw_hwio", 2: "grouped", 6: "depthwise"}[groups])
    conv = nn.Conv2d(6, 6, 3, groups=groups, bias=False)
    x = np.random.default_rng(0).normal(size=(2, 6, 7, 7)).astype(np.float32)
    want = conv(torch.from_numpy(x)).detach().numpy().transpose(0, 2, 3, 1)
    weight = conv.weight.detach().numpy()
    ours = layout.forward(weight, (3, 3, 6 // groups, 6))
    assert layout.file_shape(ours.shape) == weight.shape

    def apply(images, kernel):
        return jax.lax.conv_general_dilated(
            images,
            kernel,
            (1, 1),
            "VALID",
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            feature_group_count=groups,
        )

    got = run(apply, jnp.asarray(x.transpose(0, 2, 3, 1)), jnp.asarray(ours))
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)


class TinyAttention(Layer):
    """Self-attention over the pixels, as a transformer layer of the zoo would map a fused
    PyTorch projection (`in_proj_weight`: q, k and v stacked) onto flax's per-head kernels."""

    kind = "tiny_attention"

    def __init__(self, in_features: int, heads: int = 2, *, name: str = "att", rngs: nnx.Rngs):
        self.name, self.features = name, in_features
        self.attention = nnx.MultiHeadAttention(
            heads, in_features, qkv_features=in_features, decode=False, rngs=rngs
        )

    def output_shape(self, shape):
        return shape

    def tensors(self) -> list[TensorMap]:
        qkv = [
            TensorMap(f"in_proj_{kind}", ("attention", name, param), layout, part=(i, 3))
            for i, name in enumerate(("query", "key", "value"))
            for kind, param, layout in (
                ("weight", "kernel", "linear_heads"),
                ("bias", "bias", "heads_bias"),
            )
        ]
        out = [
            TensorMap("out_proj.weight", ("attention", "out", "kernel"), "heads_linear"),
            TensorMap("out_proj.bias", ("attention", "out", "bias")),
        ]
        return qkv + out

    @contract
    def __call__(self, x: Float[Array, "b h w c"]) -> Float[Array, "b h w c"]:
        tokens = x.reshape(x.shape[0], -1, x.shape[-1])
        return self.attention(tokens, deterministic=True).reshape(x.shape)


class AttentionNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv0 = nn.Conv2d(3, 6, 1)
        self.tiny_attention1 = nn.MultiheadAttention(6, 2, batch_first=True)
        self.dense3 = nn.Linear(6, 3)

    def forward(self, x):
        tokens = self.conv0(x).flatten(2).transpose(1, 2)  # b, h*w, c
        y, _ = self.tiny_attention1(tokens, tokens, tokens, need_weights=False)
        return self.dense3(y.mean(1))


def test_a_fused_qkv_projection_maps_onto_per_head_kernels(reference):
    torch.manual_seed(3)
    net = AttentionNet()
    with torch.no_grad():  # PyTorch starts the projection biases at zero: make them count
        net.tiny_attention1.in_proj_bias.uniform_(-1, 1)
        net.tiny_attention1.out_proj.bias.uniform_(-1, 1)
    layers = (
        {"type": "conv", "features": 6, "kernel": 1},
        {"type": "tiny_attention", "heads": 2},
        {"type": "gap"},
        {"type": "dense", "features": 3},
    )
    with LAYERS.temporary("tiny_attention", TinyAttention):
        expected = expected_tensors(abstract("sequential", (4, 4, 3), 3, layers))
        assert expected["tiny_attention1.in_proj_weight"] == ((18, 6), "F32")
        assert expected["tiny_attention1.out_proj.weight"] == ((6, 6), "F32")
        reference.assert_same_logits(net, "sequential", (4, 4, 3), 3, layers=layers)


def test_the_flatten_layout_reorders_rows_from_chw_to_hwc():
    h, w, c, out = 2, 3, 4, 5
    weight = np.random.default_rng(0).normal(size=(out, c * h * w))
    x = np.random.default_rng(1).normal(size=(c, h, w))
    kernel = linear_after_flatten(h, w, c).forward(weight, (h * w * c, out))
    np.testing.assert_allclose(x.transpose(1, 2, 0).reshape(-1) @ kernel, weight @ x.reshape(-1))
