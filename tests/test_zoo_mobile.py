"""MobileNetV3 and EfficientNet-B0: their blocks, and the models against torchvision's."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from typedpipe import ConfigError, ContractError, build_model
from typedpipe.models.layers import ACTIVATIONS, ConvNormAct, InvertedResidual, SqueezeExcite
from typedpipe.models.layouts import LAYOUTS
from typedpipe.models.summary import layer_rows
from typedpipe.models.zoo.mobilenet import make_divisible

ZOO = ("mobilenet_v3_small", "mobilenet_v3_large", "efficientnet_b0")
# torchvision's `_ops` (GMACs at 224 px) for each model.
PUBLISHED_GMACS = {
    "mobilenet_v3_small": 0.057,
    "mobilenet_v3_large": 0.217,
    "efficientnet_b0": 0.386,
}


def rngs():
    return nnx.Rngs(0)


@pytest.mark.parametrize(
    ("ours", "theirs"), [("hardswish", "hardswish"), ("hardsigmoid", "hardsigmoid")]
)
def test_hard_activations_are_torchs(ours, theirs, run):
    torch = pytest.importorskip("torch")
    x = np.concatenate([np.linspace(-4, 4, 161), [-3.0, 3.0, -1e30, 1e30]]).astype(np.float32)
    expected = getattr(torch.nn.functional, theirs)(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(
        np.asarray(run(ACTIVATIONS.get(ours), jnp.asarray(x))), expected, rtol=1e-6, atol=1e-7
    )


def test_make_divisible_rounds_as_torchvision():
    from torchvision.models._utils import _make_divisible

    for value in (4, 18, 22, 30, 60, 72 / 4, 120 / 4, 240, 16 * 6, 3.5, 1000):
        assert make_divisible(value) == _make_divisible(value, 8), value


@pytest.mark.parametrize("size", [7, 8, 9])
@pytest.mark.parametrize(
    ("kernel", "stride", "groups"), [(3, 2, 1), (5, 2, 6), (3, 1, 6), (1, 1, 1)]
)
def test_conv_bn_is_torchs_conv_norm_activation(size, kernel, stride, groups, run):
    """Symmetric (k-1)//2 padding, so a stride-2 window on an even map lines up with torch's."""
    torch = pytest.importorskip("torch")
    from torchvision.ops import Conv2dNormActivation

    reference = Conv2dNormActivation(
        6, 12, kernel, stride, groups=groups, activation_layer=torch.nn.Hardswish
    )
    reference.eval()
    layer = ConvNormAct(6, 12, kernel, stride, groups, "hardswish", name="stem", rngs=rngs())
    with torch.no_grad():
        reference[1].running_mean.uniform_(-0.5, 0.5)
        reference[1].running_var.uniform_(0.5, 1.5)
    state = reference.state_dict()
    for m in layer.tensors():
        variable = getattr(getattr(layer, m.target[0]), m.target[1])
        variable[...] = jnp.asarray(
            LAYOUTS.get(m.layout).forward(state[m.source].numpy(), variable.shape)
        )
    layer.eval()
    x = np.random.default_rng(0).normal(size=(2, size, size, 6)).astype(np.float32)
    with torch.no_grad():
        expected = (
            reference(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy().transpose(0, 2, 3, 1)
        )
    got = np.asarray(run(lambda x: layer(x), jnp.asarray(x)))
    assert got.shape == expected.shape == (2, *layer.output_shape((size, size, 6)))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_conv_bn_groups_must_divide_the_channels():
    with pytest.raises(ConfigError) as caught:
        ConvNormAct(6, 12, 3, groups=4, name="features.0", rngs=rngs())
    (diagnostic,) = caught.value.diagnostics
    assert (diagnostic.code, diagnostic.stage) == ("config.value", "features.0")
    assert "groups = 4 must divide the input's 6 channels and the 12 features" in diagnostic.message
    assert diagnostic.hint == "groups = 6 in this layer"


def test_conv_bn_even_kernel_too_large_for_a_1x1_map_is_model_shape():
    layer = ConvNormAct(3, 8, 2, name="odd", rngs=rngs())
    with pytest.raises(ContractError) as caught:
        layer.output_shape((1, 1, 3))
    (diagnostic,) = caught.value.diagnostics
    assert (diagnostic.code, diagnostic.stage) == ("model.shape", "odd")
    assert "shrinks 1x1 to 0x0" in diagnostic.message


def test_squeeze_excite_scales_each_channel_by_its_gate(run):
    layer = SqueezeExcite(8, 4, "relu", "hardsigmoid", name="se", rngs=rngs())
    x = jax.random.normal(jax.random.key(0), (2, 5, 5, 8))
    y = run(lambda x: layer(x), x)
    assert y.shape == x.shape
    ratio = y / x  # one scale per image and channel, in [0, 1] (a hard sigmoid)
    np.testing.assert_allclose(ratio, jnp.broadcast_to(ratio[:, :1, :1], ratio.shape), rtol=1e-5)
    assert bool(((ratio >= 0) & (ratio <= 1)).all())
    assert layer.flops((5, 5, 8)) == 2 * 5 * 5 * 8 + 4 * 8 * 4


@pytest.mark.parametrize(
    ("in_features", "features", "expand", "stride", "squeeze", "names", "residual"),
    [
        (16, 16, 16, 1, 8, ("block.0", "block.1", "block.2"), True),  # no expansion
        (16, 24, 72, 2, 0, ("block.0", "block.1", "block.2"), False),  # no SE
        (24, 24, 72, 1, 24, ("block.0", "block.1", "block.2", "block.3"), True),
    ],
)
def test_inverted_residual_has_torchvisions_structure(
    in_features, features, expand, stride, squeeze, names, residual, run
):
    block = InvertedResidual(
        in_features,
        features,
        expand,
        5,
        stride,
        "hardswish",
        squeeze,
        name="features.4",
        rngs=rngs(),
    )
    assert [layer.name for layer in block.block] == [f"features.4.{n}" for n in names]
    assert block.residual is residual
    depthwise = block.block[1 if expand != in_features else 0]
    assert (depthwise.groups, depthwise.kernel, depthwise.stride) == (expand, 5, stride)
    assert {m.source.split(".")[0] for m in block.tensors()} == {"block"}
    block.eval()
    x = jax.random.normal(jax.random.key(0), (2, 9, 9, in_features))
    y = run(lambda x: block(x), x)
    side = (9 - 1) // stride + 1
    assert (
        y.shape == (2, side, side, features)
        and block.output_shape((9, 9, in_features)) == y.shape[1:]
    )


def test_inverted_residual_refuses_the_wrong_channels_naming_itself():
    block = InvertedResidual(16, 24, 64, name="features.2", rngs=rngs())
    with pytest.raises(ContractError) as caught:
        block(jnp.ones((1, 8, 8, 24)))
    (diagnostic,) = caught.value.diagnostics
    assert diagnostic.stage == "features.2"
    assert "16" in diagnostic.expected and "24" in diagnostic.got


def test_stochastic_depth_drops_whole_samples_in_training_only():
    """torchvision's StochasticDepth("row"): a sample's block output is dropped whole
    (the block returns its input) or kept and scaled by 1 / (1 - p); eval: identity."""
    block = InvertedResidual(8, 8, 16, squeeze=2, drop_path=0.5, name="features.2.1", rngs=rngs())
    x = jax.random.normal(jax.random.key(1), (64, 4, 4, 8))
    dropped = np.asarray((block(x) == x).all(axis=(1, 2, 3)))
    assert 10 < dropped.sum() < 54  # about half, per sample
    block.eval()
    first, second = block(x), block(x)
    np.testing.assert_array_equal(first, second)
    assert not bool((first == x).all(axis=(1, 2, 3)).any())


def _block_config(**entry):
    return [
        {"type": "inverted_residual", "features": 8, "expand": 16, **entry},
        {"type": "gap"},
        {"type": "dense", "features": 3},
    ]


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ({"squeeze": -1}, "an int in [0, 65536]"),
        ({"drop_path": 1.0}, "a number in [0, 1)"),
        ({"epsilon": 0.0}, "a number in (0, 0.1]"),
    ],
)
def test_block_settings_are_checked_from_a_config(entry, expected):
    with pytest.raises(ConfigError) as caught:
        build_model("sequential", (8, 8, 8), 3, _block_config(**entry), rngs=rngs())
    (diagnostic,) = caught.value.diagnostics
    assert diagnostic.code == "config.value"
    assert next(iter(entry)) in diagnostic.message and expected in diagnostic.expected


def test_an_unknown_gate_is_named_by_its_own_key():
    """The activation registry serves `se_gate` too: the fix sets `se_gate`, not `activation`."""
    with pytest.raises(ConfigError) as caught:
        build_model("sequential", (8, 8, 8), 3, _block_config(se_gate="hard_sigmoid"), rngs=rngs())
    (diagnostic,) = caught.value.diagnostics
    assert diagnostic.code == "config.unknown_name"
    assert diagnostic.got == "se_gate = 'hard_sigmoid'"
    assert diagnostic.hint.startswith(
        'se_gate = "hardsigmoid" in [model] layers[0] (inverted_residual)'
    )


def test_a_config_can_build_with_the_mobile_layers(run):
    layers = [
        {"type": "conv_bn", "features": 16, "stride": 2, "activation": "hardswish"},
        {
            "type": "inverted_residual",
            "features": 16,
            "expand": 32,
            "squeeze": 8,
            "se_gate": "hardsigmoid",
        },
        {"type": "squeeze_excite", "squeeze": 4},
        {"type": "gap"},
        {"type": "dense", "features": 3},
    ]
    model = build_model("sequential", (16, 16, 3), 3, layers, rngs=rngs())
    model.eval()
    assert run(lambda x: model(x), jnp.ones((2, 16, 16, 3))).shape == (2, 3)


@pytest.mark.parametrize("name", ZOO)
def test_parameters_are_torchvisions(name):
    torchvision = pytest.importorskip("torchvision")
    model = nnx.eval_shape(lambda: build_model(name, (224, 224, 3), 1000, rngs=rngs()))
    ours = sum(row.params for row in layer_rows(model))
    theirs = sum(p.numel() for p in getattr(torchvision.models, name)().parameters())
    assert ours == theirs


@pytest.mark.parametrize("name", ZOO)
def test_flops_are_close_to_the_published(name):
    """torchvision publishes multiply-adds of the convolutions and linear layers;
    ours also count batch norm, pooling and the residual sums (a few percent)."""
    model = nnx.eval_shape(lambda: build_model(name, (224, 224, 3), 1000, rngs=rngs()))
    gmacs = sum(row.flops for row in layer_rows(model)) / 2e9
    assert PUBLISHED_GMACS[name] <= gmacs <= 1.05 * PUBLISHED_GMACS[name]


@pytest.mark.parametrize("name", ZOO)
def test_below_32_pixels_is_model_shape_with_a_fix(name):
    with pytest.raises(ContractError) as caught:
        build_model(name, (31, 64, 3), 10, rngs=rngs())
    (diagnostic,) = caught.value.diagnostics
    assert (diagnostic.code, diagnostic.stage) == ("model.shape", "model")
    assert diagnostic.message.startswith(f"{name} needs an input of at least 32x32, got 31x64")
    assert (diagnostic.expected, diagnostic.got) == ("b h w 3 with h, w >= 32", "b 31 64 3")
    assert diagnostic.hint.startswith('name = "small_cnn" under [model]')
    assert diagnostic.hint.endswith(f"or a [model] input of 32x32 or more for {name}")


@pytest.mark.parametrize("name", ZOO)
def test_logits_at_the_smallest_input_eagerly_and_jitted(name, run):
    model = build_model(name, (32, 32, 3), 10, rngs=rngs())
    model.eval()
    out = run(lambda x: model(x), jax.random.normal(jax.random.key(0), (2, 32, 32, 3)))
    assert out.shape == (2, 10) and bool(jnp.isfinite(out).all())
    with pytest.raises(ContractError) as caught:
        model(jnp.ones((2, 32, 32, 1)))
    assert caught.value.diagnostics[0].code == "shape.channels"


@pytest.mark.parametrize(("name", "jit"), [*((name, False) for name in ZOO), (ZOO[0], True)])
def test_logits_equal_torchvisions_from_its_saved_weights(name, jit, reference):
    """Random torchvision weights (batch norm statistics randomised by the helper),
    saved as safetensors, imported: eval-mode logits within 1e-4 of the scale."""
    import torch
    import torchvision

    torch.manual_seed(0)
    reference.assert_same_logits(
        getattr(torchvision.models, name)(num_classes=10), name, (64, 64, 3), 10, jit=jit
    )


def test_an_even_kernel_is_refused_by_the_block():
    with pytest.raises(ConfigError) as caught:
        build_model("sequential", (8, 8, 8), 3, _block_config(kernel=4), rngs=rngs())
    (diagnostic,) = caught.value.diagnostics
    assert (diagnostic.code, diagnostic.got) == ("config.value", "kernel = 4")
    assert diagnostic.hint == "kernel = 5 in [model] layers[0] (inverted_residual)"


def test_groups_that_clash_with_the_input_name_the_config_entry():
    layers = [
        {"type": "conv_bn", "features": 12, "groups": 4},
        {"type": "gap"},
        {"type": "dense", "features": 3},
    ]
    with pytest.raises(ConfigError) as caught:
        build_model("sequential", (8, 8, 6), 3, layers, rngs=rngs())
    (diagnostic,) = caught.value.diagnostics
    assert diagnostic.hint == "groups = 6 in [model] layers[0] (conv_bn)"


PREFLIGHT = """
name = "mobilenet-224"
[data]
source = "synthetic"
num_samples = 200
[model]
name = "mobilenet_v3_small"
input = [224, 224, 3]
num_classes = 10
[train]
batch_size = 1
"""


def test_summary_of_a_224px_config_lists_torchvisions_modules():
    from typedpipe.pipeline.check.summary import summarize
    from typedpipe.pipeline.config import parse_config

    rows = summarize(parse_config(PREFLIGHT))
    names = [row.name for row in rows]
    assert names[:3] == ["data", "features.0", "features.1"]
    assert names[-5:] == ["features.12", "avgpool", "classifier.0", "classifier.2", "classifier.3"]
    head = 1024 * (1000 - 10) + (1000 - 10)  # torchvision's 1000-class head, less 10 classes'
    assert sum(row.params for row in rows) == 2_542_856 - head
    assert rows[1].output == "b 112 112 16" and rows[-5].output == "b 7 7 576"


def test_preflight_estimates_a_224px_step(monkeypatch):
    """check compiles the train step on shapes alone; on a device too small for it, the
    estimate is reported: the parameters, their gradients and Adam's two moments
    (1.5M x 4 x 4 bytes = 24 MiB) plus the activations."""
    from typedpipe.pipeline.check import preflight
    from typedpipe.pipeline.check.static import check_draft
    from typedpipe.pipeline.config import parse_draft

    monkeypatch.setattr(preflight, "device_memory", lambda: (2**20, "a 1 MiB test device"))
    (diagnostic,) = check_draft(parse_draft(PREFLIGHT))
    assert (diagnostic.code, diagnostic.stage) == ("memory.exceeds", "[train]")
    need = float(re.search(r"needs ([\d.]+) GiB per device for batch 1", diagnostic.message)[1])
    assert 0.02 < need < 1.0
    assert diagnostic.hint.startswith("even one image does not fit")
