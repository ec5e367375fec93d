"""Weights from a file: PyTorch state dicts in safetensors, and typedpipe bundles.

Reference nets are built in plain PyTorch (random weights, nothing downloaded)
with the layers in typedpipe's order, saved with `safetensors.torch.save_file`,
imported, and their eval-mode logits compared. Faulty files (partial, extra,
misshapen, pickled, garbage, lying headers) must each be one diagnostic naming
the tensors, found from the header alone.
"""

import json
import shlex
import struct
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jaxtyping import Array, Float

from typedpipe.contracts import ContractError, Diagnostic, contract
from typedpipe.models import LAYERS, Layer, build_model
from typedpipe.models.layouts import LAYOUTS, TensorMap, linear_after_flatten
from typedpipe.models.weights import (
    expected_tensors,
    load_weights,
    read_index,
    variable,
    weights_diagnostics,
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


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_a_residual_block_with_a_projection_equals_pytorch(reference, jit):
    torch.manual_seed(2)
    reference.assert_same_logits(
        ResidualNet(), "sequential", (6, 6, 3), 4, layers=RESIDUAL, jit=jit
    )


class Unnormalised(SmallCNN):
    """small_cnn with its second batch norm left out: the same tensors, other logits."""

    def forward(self, x):
        x = self.batchnorm1(torch.relu(self.conv0(x)))
        x = nn.functional.max_pool2d(torch.relu(self.conv2(x)), 2)
        return self.dense9(torch.relu(self.conv6(torch.relu(self.conv4(x)))).mean((2, 3)))


def test_the_reference_check_fails_on_a_model_that_differs(reference):
    torch.manual_seed(0)
    with pytest.raises(AssertionError, match="small_cnn: logits differ by"):
        reference.assert_same_logits(Unnormalised(), "small_cnn", (8, 8, 1), 10)


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
    assert isinstance(kernel, jax.Array) and kernel.dtype == jnp.float32
    want = state["conv0.weight"].to(torch.float32).numpy().transpose(2, 3, 1, 0)
    np.testing.assert_array_equal(np.asarray(kernel), want)


# --- layouts ---------------------------------------------------------------------------------


@pytest.mark.parametrize("groups", [1, 2, 6])
def test_grouped_and_depthwise_kernels_convolve_as_pytorch(groups, run):
    layout = LAYOUTS[{1: "oihw_hwio", 2: "grouped", 6: "depthwise"}[groups]]
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


# An example of our shape for each layout (a new layout needs a row: the test says so).
LAYOUT_SHAPES = {
    "identity": (5,),
    "oihw_hwio": (3, 3, 2, 4),
    "grouped": (3, 3, 2, 4),
    "depthwise": (3, 3, 1, 4),
    "linear": (6, 5),
    "linear_heads": (6, 2, 3),
    "heads_linear": (2, 3, 6),
    "heads_bias": (2, 3),
    "channel_scale": (4,),
}


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_every_layout_keeps_its_shape_rule_and_every_value(name):
    assert set(LAYOUTS) == set(LAYOUT_SHAPES), "give a new layout a row in LAYOUT_SHAPES"
    ours = LAYOUT_SHAPES[name]
    layout = LAYOUTS[name]
    stored = np.arange(np.prod(ours), dtype=np.float32).reshape(layout.file_shape(ours))
    translated = layout.forward(stored, ours)
    assert translated.shape == ours
    np.testing.assert_array_equal(np.sort(translated.ravel()), stored.ravel())


def test_an_unknown_layout_names_the_known_ones():
    from typedpipe.models.layouts import layout_named

    with pytest.raises(ValueError, match="no tensor layout 'oihw'; the layouts: channel_scale"):
        layout_named("oihw")


def test_a_channel_scale_drops_its_nchw_axes():
    layout = LAYOUTS["channel_scale"]
    scale = np.arange(4.0).reshape(4, 1, 1)
    assert layout.file_shape((4,)) == (4, 1, 1)
    np.testing.assert_array_equal(layout.forward(scale, (4,)), np.arange(4.0))


def test_the_flatten_layout_reorders_rows_from_chw_to_hwc():
    h, w, c, out = 2, 3, 4, 5
    weight = np.random.default_rng(0).normal(size=(out, c * h * w))
    x = np.random.default_rng(1).normal(size=(c, h, w))
    kernel = linear_after_flatten(h, w, c).forward(weight, (h * w * c, out))
    np.testing.assert_allclose(x.transpose(1, 2, 0).reshape(-1) @ kernel, weight @ x.reshape(-1))


# --- faults: one diagnostic, from the header alone ------------------------------------------


def mismatch_of(path, model=None) -> Diagnostic:
    (found,) = weights_diagnostics(model if model is not None else abstract(), path)
    assert found.code == "weights.mismatch" and found.stage == "[model] weights", found
    return found


def test_a_partial_file_names_every_missing_tensor(small_file, tmp_path):
    net, _ = small_file
    state = {k: v for k, v in net.state_dict().items() if not k.startswith("batchnorm5.")}
    found = mismatch_of(save(state, tmp_path / "partial.safetensors"))
    assert sorted(found.items) == [
        "missing batchnorm5.bias 64",
        "missing batchnorm5.running_mean 64",
        "missing batchnorm5.running_var 64",
        "missing batchnorm5.weight 64",
    ]
    assert found.total_items == 4 and "4 missing" in found.message
    assert "save the whole state_dict()" in found.hint


def test_an_extra_tensor_is_unused_and_named(small_file, tmp_path):
    net, _ = small_file
    state = {**net.state_dict(), "projector.weight": torch.zeros(3, 7)}
    found = mismatch_of(save(state, tmp_path / "extra.safetensors"))
    assert found.items == ("unused projector.weight 3x7 F32",)


def test_a_wrong_shape_names_both_shapes(small_file, tmp_path):
    net, _ = small_file
    state = {**net.state_dict(), "conv2.weight": torch.zeros(32, 32, 5, 5)}
    found = mismatch_of(save(state, tmp_path / "shape.safetensors"))
    assert found.items == (
        "shape conv2.weight: the model needs 32x32x3x3 F32, the file has 32x32x5x5 F32",
    )


def test_an_integer_tensor_where_floats_belong_is_a_mismatch(small_file, tmp_path):
    net, _ = small_file
    state = {**net.state_dict(), "conv0.bias": torch.zeros(32, dtype=torch.int64)}
    found = mismatch_of(save(state, tmp_path / "int.safetensors"))
    assert found.items == ("shape conv0.bias: the model needs 32 F32, the file has 32 I64",)


class Unmapped(Layer):
    """A layer registered without `tensors()`: its kernel has no PyTorch name."""

    kind = "unmapped"

    def __init__(self, in_features: int, *, name: str = "unmapped", rngs: nnx.Rngs):
        self.name, self.features = name, in_features
        self.scale = nnx.Param(jnp.ones((in_features,)))

    def output_shape(self, shape):
        return shape

    @contract
    def __call__(self, x: Float[Array, "b h w c"]) -> Float[Array, "b h w c"]:
        return x * self.scale[...].reshape(1, 1, 1, -1)


def test_a_variable_no_layer_maps_is_never_left_random_quietly(tiny_file):
    _, path = tiny_file
    layers = (TINY[0], {"type": "unmapped"}, *TINY[1:])
    with LAYERS.temporary("unmapped", Unmapped):
        found = mismatch_of(path, abstract("sequential", (8, 8, 1), 10, layers))
    assert found.items[0] == (
        "unmapped layers.1.scale 4: layer unmapped1 (unmapped) names no PyTorch tensor for it"
    )
    assert "with no PyTorch name" in found.message and "tensors()" in found.hint


def test_two_layers_of_one_name_are_a_config_fault(tiny_file):
    _, path = tiny_file
    layers = ({**TINY[0], "name": "conv"}, {**TINY[0], "name": "conv"}, *TINY[1:])
    (found,) = weights_diagnostics(abstract("sequential", (8, 8, 1), 10, layers), path)
    assert found.code == "config.value" and "both named 'conv'" in found.message
    assert found.hint == 'name = "conv_1" in [model] layers[1] (conv)'


def test_a_head_of_more_classes_than_any_model_is_no_new_head(tiny_file, tmp_path):
    net, _ = tiny_file
    state = {**net.state_dict(), "dense2.weight": torch.zeros(200_000, 4)}
    state["dense2.bias"] = torch.zeros(200_000)
    found = mismatch_of(save(state, tmp_path / "huge.safetensors"), tiny())
    assert "shape dense2.bias: the model needs 10 F32, the file has 200000 F32" in found.items


def test_a_large_tensor_under_an_ignored_name_is_not_ignored(small_file, tmp_path):
    net, _ = small_file
    state = {**net.state_dict(), "batchnorm1.num_batches_tracked": torch.zeros(64, 64)}
    found = mismatch_of(save(state, tmp_path / "big.safetensors"))
    assert found.items == ("unused batchnorm1.num_batches_tracked 64x64 F32",)


def test_a_dataparallel_prefix_is_recognised(small_file, tmp_path):
    net, _ = small_file
    state = {f"module.{k}": v for k, v in net.state_dict().items() if "num_batches" not in k}
    found = mismatch_of(save(state, tmp_path / "dp.safetensors"))
    assert "prefix 'module.'" in found.hint and "removeprefix('module.')" in found.hint
    assert found.total_items == 2 * 18


def test_the_mismatch_is_found_before_any_tensor_is_read(small_file, tmp_path, monkeypatch):
    import typedpipe.models.weights as weights

    net, _ = small_file
    path = save({**net.state_dict(), "extra": torch.zeros(2)}, tmp_path / "x.safetensors")
    monkeypatch.setattr(weights, "read_tensors", lambda *a: pytest.fail("read tensor data"))
    model = build_model("small_cnn", (8, 8, 1), 10, rngs=nnx.Rngs(0))
    with pytest.raises(ContractError) as err:
        load_weights(model, path)
    assert [d.code for d in err.value.diagnostics] == ["weights.mismatch"]


def test_a_new_head_loads_everything_else_bit_exact(small_file):
    net, path = small_file
    (note,) = weights_diagnostics(abstract(classes=3), path)
    assert note.code == "weights.new_head" and note.severity == "warning"
    assert note.message == (
        "head dense9: new, 3 classes (the file has 10); every other tensor loaded"
    )
    model = build_model("small_cnn", (8, 8, 1), 3, weights=path, rngs=nnx.Rngs(7))
    fresh = build_model("small_cnn", (8, 8, 1), 3, rngs=nnx.Rngs(7))
    state = net.state_dict()
    np.testing.assert_array_equal(
        np.asarray(model.layers[4].conv.kernel[...]),
        state["conv4.weight"].numpy().transpose(2, 3, 1, 0),
    )
    np.testing.assert_array_equal(
        np.asarray(model.layers[5].norm.var[...]), state["batchnorm5.running_var"].numpy()
    )
    # The head is as a fresh model of the same seed starts it: new, not read.
    np.testing.assert_array_equal(
        np.asarray(model.layers[9].linear.kernel[...]),
        np.asarray(fresh.layers[9].linear.kernel[...]),
    )


def test_a_head_of_another_width_too_is_a_mismatch_not_a_new_head(small_file, tmp_path):
    net, _ = small_file
    state = {**net.state_dict(), "dense9.weight": torch.zeros(3, 65), "dense9.bias": torch.zeros(3)}
    found = mismatch_of(save(state, tmp_path / "wide.safetensors"), abstract(classes=3))
    assert "shape dense9.weight: the model needs 3x64 F32, the file has 3x65 F32" in found.items


@pytest.mark.parametrize("suffix", [".pth", ".pt", ".bin", ".ckpt"])
def test_a_pickle_is_refused_unopened(small_file, tmp_path, suffix, monkeypatch):
    net, _ = small_file
    path = tmp_path / f"net{suffix}"
    torch.save(net.state_dict(), path)
    monkeypatch.setattr("builtins.open", lambda *a, **k: pytest.fail("opened the pickle"))
    (found,) = weights_diagnostics(abstract(), path)
    assert found.code == "weights.format" and "never unpickles" in found.message
    assert f'weights = "{path.with_suffix(".safetensors")}" under [model]' in found.hint


def test_the_conversion_in_the_hint_works_as_written(small_file, tmp_path):
    net, _ = small_file
    path = tmp_path / "net.pth"
    torch.save(net.state_dict(), path)
    (found,) = weights_diagnostics(abstract(), path)
    command = found.hint.split("convert it once: ")[1].split("; then ")[0]
    # Run as written, by the Python that has torch, it gives a file that loads cleanly.
    assert command.startswith("python -c ")
    command = command.replace("python", shlex.quote(sys.executable), 1)
    subprocess.run(command, shell=True, check=True, cwd=tmp_path, executable="/bin/bash")
    assert weights_diagnostics(abstract(), path.with_suffix(".safetensors")) == []


def test_a_missing_file_names_the_config_line(tmp_path):
    (found,) = weights_diagnostics(abstract(), tmp_path / "nowhere.safetensors")
    assert found.code == "weights.missing"
    assert found.got == f'weights = "{tmp_path / "nowhere.safetensors"}"'
    assert "under [model]" in found.hint


def test_another_format_is_refused(tmp_path):
    (tmp_path / "w.h5").write_bytes(b"\x89HDF\r\n\x1a\n")
    (found,) = weights_diagnostics(abstract(), tmp_path / "w.h5")
    assert found.code == "weights.format" and found.got == "a .h5 file"


def header_file(path: Path, header: dict, data: bytes = b"") -> Path:
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)
    return path


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"garbage, not a header",
        struct.pack("<Q", 2**62) + b"{}",  # a header length past any file
        struct.pack("<Q", 5) + b"[1,2]",  # JSON, not an object of tensors
    ],
    ids=["empty", "garbage", "huge-length", "not-an-object"],
)
def test_garbage_is_corrupt_not_a_traceback(tmp_path, content):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    (found,) = weights_diagnostics(abstract(), path)
    assert found.code == "weights.corrupt" and "cannot be read as safetensors" in found.message
    assert "save_file" in found.hint


def test_a_header_claiming_huge_shapes_is_refused_before_allocating(tmp_path):
    huge = {"conv0.weight": {"dtype": "F32", "shape": [2**40, 2**40], "data_offsets": [0, 16]}}
    (found,) = weights_diagnostics(
        abstract(), header_file(tmp_path / "h.safetensors", huge, bytes(16))
    )
    assert found.code == "weights.corrupt"
    lying = {"conv0.weight": {"dtype": "F32", "shape": [4096, 4096], "data_offsets": [0, 2**26]}}
    (found,) = weights_diagnostics(
        abstract(), header_file(tmp_path / "l.safetensors", lying, bytes(16))
    )
    assert found.code == "weights.corrupt"


def test_nan_weights_are_named_when_read(small_file, tmp_path):
    net, _ = small_file
    state = dict(net.state_dict())
    state["conv2.bias"] = state["conv2.bias"].clone()
    state["conv2.bias"][3] = float("nan")
    path = save(state, tmp_path / "nan.safetensors")
    with pytest.raises(ContractError) as err:
        build_model("small_cnn", (8, 8, 1), 10, weights=path, rngs=nnx.Rngs(0))
    (found,) = err.value.diagnostics
    assert found.code == "value.nonfinite" and found.items == ("conv2.bias",)
    assert found.stage == "[model] weights"


def test_a_fifo_is_refused_without_blocking(tmp_path):
    import os

    os.mkfifo(tmp_path / "pipe.safetensors")
    (found,) = weights_diagnostics(abstract(), tmp_path / "pipe.safetensors")
    assert found.code == "weights.corrupt" and "not a regular file" in found.message


def test_a_pickle_named_safetensors_is_recognised(small_file, tmp_path):
    net, _ = small_file
    path = tmp_path / "disguised.safetensors"
    torch.save(net.state_dict(), path)
    (found,) = weights_diagnostics(abstract(), path)
    assert found.code == "weights.corrupt" and found.got == "a PyTorch pickle named .safetensors"
    assert "weights_only=True" in found.hint


# --- the pipeline: config, check, summary, training, and a run's bundle as a warm start -----


TINY = ({"type": "conv", "features": 4}, {"type": "gap"}, {"type": "dense", "features": 10})


class Tiny(nn.Module):
    """`TINY` in PyTorch: the smallest model a run trains (its step compiles fast)."""

    def __init__(self, classes: int = 10):
        super().__init__()
        self.conv0 = nn.Conv2d(1, 4, 3, padding="same")
        self.dense2 = nn.Linear(4, classes)

    def forward(self, x):
        return self.dense2(self.conv0(x).mean((2, 3)))


def pipeline_config(weights: Path | str | None, classes: int = 10, name: str = "small_cnn"):
    import tomli_w

    from typedpipe.pipeline.config import parse_config

    model = {"name": name, "input": [8, 8, 1], "num_classes": classes}
    if name == "sequential":
        model["layers"] = [
            {**entry, "features": classes} if entry["type"] == "dense" else entry for entry in TINY
        ]
    if weights is not None:
        model["weights"] = str(weights)
    table = {
        "name": "warm",
        "data": {"source": "synthetic", "num_samples": 160},
        "model": model,
        # A step this small leaves the weights where they started, to float32 precision.
        "train": {"epochs": 1, "batch_size": 32, "learning_rate": 1e-30},
    }
    return parse_config(tomli_w.dumps(table))


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory):
    torch.manual_seed(4)
    net = Tiny()
    return net, save(net.state_dict(), tmp_path_factory.mktemp("tiny") / "tiny.safetensors")


@pytest.fixture(scope="module")
def warm_run(tiny_file, tmp_path_factory):
    """A run trained (by steps too small to move anything) from `tiny_file`'s weights."""
    from typedpipe.pipeline.run import train_run

    _, path = tiny_file
    run = tmp_path_factory.mktemp("run") / "warm"
    train_run(pipeline_config(path, name="sequential"), run)
    return run


def bundle_arrays(folder: Path) -> dict:
    from typedpipe.models.weightfiles import _bundle_tensors, read_index

    return _bundle_tensors(folder, [name for name in read_index(folder) if "rngs" not in name])


def test_training_starts_from_the_file(tiny_file, warm_run):
    net, _ = tiny_file
    trained = bundle_arrays(warm_run / "model")
    state = net.state_dict()
    np.testing.assert_allclose(
        trained["layers.0.conv.kernel"], state["conv0.weight"].numpy().transpose(2, 3, 1, 0)
    )
    np.testing.assert_allclose(trained["layers.2.linear.kernel"], state["dense2.weight"].numpy().T)


def test_init_state_takes_the_weights_as_an_argument(small_file):
    from typedpipe.pipeline.train.step import make_train

    net, path = small_file
    train = make_train(pipeline_config(path, classes=4), "int", steps_per_epoch=3)
    initial = train.initial_weights()
    assert initial is not None and len(initial.paths) == 16  # the head is new: 18 - 2
    state = jax.jit(train.init_state)(jax.random.key(0), initial)
    got = state.params["layers"][2]["conv"]["kernel"][...]
    want = net.state_dict()["conv2.weight"].numpy().transpose(2, 3, 1, 0)
    np.testing.assert_array_equal(np.asarray(got), want)
    assert state.params["layers"][9]["linear"]["kernel"][...].shape == (64, 4)
    assert make_train(pipeline_config(None), "int", 3).initial_weights() is None


def tiny(classes: int = 10):
    return abstract(
        "sequential", (8, 8, 1), classes, pipeline_config(None, classes, "sequential").model.layers
    )


def test_a_bundle_is_a_warm_start(warm_run):
    bundle = warm_run / "model"
    layers = pipeline_config(None, name="sequential").model.layers
    model = build_model("sequential", (8, 8, 1), 10, layers, weights=bundle, rngs=nnx.Rngs(5))
    trained = bundle_arrays(bundle)
    assert sorted(trained) == [
        "layers.0.conv.bias",
        "layers.0.conv.kernel",
        "layers.2.linear.bias",
        "layers.2.linear.kernel",
    ]
    for name, want in trained.items():
        _, index, *rest = name.split(".")
        got = variable(model, ("layers", int(index), *rest))[...]
        np.testing.assert_array_equal(np.asarray(got), want)


def test_a_bundle_into_fewer_classes_starts_a_new_head(warm_run):
    (note,) = weights_diagnostics(tiny(classes=4), warm_run / "model")
    assert note.code == "weights.new_head"
    assert note.message.startswith("head dense2: new, 4 classes (the file has 10)")


def test_a_bundle_of_another_architecture_is_a_mismatch(warm_run):
    found = mismatch_of(warm_run / "model", abstract())
    assert (
        "shape layers.0.conv.kernel: the model needs 3x3x1x32 F32, the file has 3x3x1x4 F32"
        in found.items
    )
    assert "missing layers.1.norm.mean 32" in found.items


def test_a_folder_that_is_no_bundle_is_refused(tmp_path):
    (found,) = weights_diagnostics(abstract(), tmp_path)
    assert found.code == "weights.corrupt" and "contract.json" in found.message
    (tmp_path / "contract.json").write_text('{"format": "other"}')
    (tmp_path / "weights").mkdir()
    (found,) = weights_diagnostics(abstract(), tmp_path)
    assert found.code == "weights.corrupt" and "not a typedpipe model contract" in found.message


def test_summary_says_the_head_is_new_in_one_line(small_file):
    from typedpipe.pipeline.check.summary import summarize

    _, path = small_file
    rows = summarize(pipeline_config(path, classes=3))
    assert rows[-1].name == "weights"
    assert rows[-1].output == (
        "head dense9: new, 3 classes (the file has 10); every other tensor loaded"
    )
    assert summarize(pipeline_config(path))[-1].output == f"every tensor loaded from {path}"


def test_summary_refuses_a_file_that_does_not_fit(small_file, tmp_path):
    from typedpipe.pipeline.check.summary import summarize

    net, _ = small_file
    partial = save({"conv0.weight": net.conv0.weight}, tmp_path / "p.safetensors")
    with pytest.raises(ContractError) as err:
        summarize(pipeline_config(partial))
    assert [d.code for d in err.value.diagnostics] == ["weights.mismatch"]


def cli_check(capsys, tmp_path: Path, config) -> tuple[int, dict]:
    from typedpipe.cli import main

    path = tmp_path / "config.toml"
    path.write_text(config.to_toml())
    code = main(["check", str(path), "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_check_reports_a_mismatch_from_the_header_alone(small_file, tmp_path, capsys):
    net, _ = small_file
    state = {**net.state_dict(), "conv6.weight": torch.zeros(64, 64, 1, 1)}
    path = save(state, tmp_path / "bad.safetensors")
    code, result = cli_check(capsys, tmp_path, pipeline_config(path))
    assert code == 1 and result["ok"] is False
    (found,) = [d for d in result["diagnostics"] if d["code"] == "weights.mismatch"]
    assert found["stage"] == "[model] weights"
    assert found["items"] == [
        "shape conv6.weight: the model needs 64x64x3x3 F32, the file has 64x64x1x1 F32"
    ]
    assert found["total_items"] == 1 and found["hint"]


def test_check_passes_a_new_head_with_one_note(tiny_file, tmp_path, capsys):
    _, path = tiny_file
    config = pipeline_config(path, classes=4, name="sequential")
    code, result = cli_check(capsys, tmp_path, config)
    assert code == 0 and result["ok"] is True
    assert [(d["code"], d["severity"]) for d in result["diagnostics"]] == [
        ("weights.new_head", "warning")
    ]
    (note,) = result["diagnostics"]
    assert (
        note["message"]
        == "head dense2: new, 4 classes (the file has 10); every other tensor loaded"
    )


def test_check_names_a_missing_file_and_its_config_line(tmp_path, capsys):
    code, result = cli_check(capsys, tmp_path, pipeline_config(tmp_path / "gone.safetensors"))
    assert code == 1
    (found,) = [d for d in result["diagnostics"] if d["code"] == "weights.missing"]
    assert found["got"] == f'weights = "{tmp_path / "gone.safetensors"}"'
    assert "under [model]" in found["hint"]


def test_the_config_key_is_strict():
    from typedpipe.pipeline.config import parse_draft

    for value in ('""', "3", '"a\\u0000b"'):
        (found,) = parse_draft(f"[model]\nweights = {value}\n").diagnostics
        assert found.code == "config.value" and "weights" in found.got
