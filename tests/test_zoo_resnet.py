"""The zoo's ResNets are torchvision's: parameters, FLOPs, shapes, names and logits.

The equivalence tests build torchvision's networks with random weights (nothing
is downloaded), save their state dicts as safetensors, load them by layer name
and compare eval-mode logits; they skip where torch is not installed.
"""

import re

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from typedpipe import MODELS, ConfigError, ContractError, build_model
from typedpipe.models.summary import layer_rows
from typedpipe.pipeline.check import preflight
from typedpipe.pipeline.check.static import check_draft
from typedpipe.pipeline.check.summary import summarize
from typedpipe.pipeline.config import parse_config, parse_draft

NAMES = ("resnet18", "resnet34", "resnet50")

# torchvision's documented sizes at 224 px and 1000 classes: parameters, and
# GFLOPS as its model table counts them (multiply-adds; typedpipe counts 2 each).
TORCHVISION = {
    "resnet18": (11_689_512, 1.81e9),
    "resnet34": (21_797_672, 3.66e9),
    "resnet50": (25_557_032, 4.09e9),
}


def abstract(name, input_shape=(224, 224, 3), num_classes=1000):
    return nnx.eval_shape(lambda: build_model(name, input_shape, num_classes, rngs=nnx.Rngs(0)))


def torchvision_model(name, num_classes):
    torchvision = pytest.importorskip("torchvision")
    return getattr(torchvision.models, name)(weights=None, num_classes=num_classes)


@pytest.mark.parametrize("name", NAMES)
def test_parameters_and_flops_are_torchvisions(name):
    rows = layer_rows(abstract(name))
    params, macs = TORCHVISION[name]
    assert sum(row.params for row in rows) == params
    # Batch norms, ReLUs, sums and pooling add under 1% to the convolutions' count.
    assert sum(row.flops for row in rows) == pytest.approx(2 * macs, rel=0.02)


@pytest.mark.parametrize("name", NAMES)
def test_parameter_count_matches_torchvision_for_any_head(name):
    torch_model = torchvision_model(name, 7)
    expected = sum(p.numel() for p in torch_model.parameters())
    assert sum(row.params for row in layer_rows(abstract(name, num_classes=7))) == expected


@pytest.mark.parametrize("name", NAMES)
def test_layers_are_named_as_torchvisions_modules(name):
    """The weight import maps file tensors by layer name: every layer with weights is a
    torchvision module, and every tensor of torchvision's state dict is mapped."""
    torch_model = torchvision_model(name, 10)
    model = abstract(name, (64, 64, 3), 10)
    mapped = {f"{layer.name}.{m.source}" for layer in model.layers for m in layer.tensors()}
    stored = {k for k in torch_model.state_dict() if not k.endswith("num_batches_tracked")}
    assert mapped == stored
    assert [layer.name for layer in model.layers][:3] == ["conv1", "bn1", "maxpool"]
    assert [layer.name for layer in model.layers][-2:] == ["avgpool", "fc"]


def test_feature_maps_shrink_as_torchvisions():
    """224 px: conv1 112, max pool 56, then 56, 28, 14, 7 per stage."""
    model = abstract("resnet50")
    outputs = {row.name: row.output for row in layer_rows(model)}
    assert outputs["conv1"] == "b 112 112 64"
    assert outputs["maxpool"] == "b 56 56 64"
    assert outputs["layer1.2"] == "b 56 56 256"
    assert outputs["layer2.0"] == "b 28 28 512"
    assert outputs["layer3.5"] == "b 14 14 1024"
    assert outputs["layer4.2"] == "b 7 7 2048"
    assert outputs["fc"] == "b 1000"


def test_logits_and_every_layer_as_declared(run):
    """Eagerly and under jit: each layer's real output is its `output_shape` (the
    bottleneck's own are in test_layers; resnet50 runs eagerly and jitted below)."""
    size = 64
    model = build_model("resnet18", (size, size, 3), 5, rngs=nnx.Rngs(0))
    model.eval()
    x = jax.random.normal(jax.random.key(0), (2, size, size, 3))

    def flow(x):
        outputs = []
        for layer in model.layers:
            x = layer(x)
            outputs.append(x)
        return outputs

    outputs = run(flow, x)
    declared, shape = [], (size, size, 3)
    for layer in model.layers:
        shape = layer.output_shape(shape)
        declared.append(shape)
    assert [out.shape[1:] for out in outputs] == declared
    assert outputs[-1].shape == (2, 5) and bool(jnp.isfinite(outputs[-1]).all())


def test_a_block_fed_the_wrong_channels_is_named():
    model = build_model("resnet18", (64, 64, 3), 5, rngs=nnx.Rngs(0))
    block = next(layer for layer in model.layers if layer.name == "layer2.0")
    with pytest.raises(ContractError) as info:
        jax.jit(lambda x: block(x)).trace(jax.ShapeDtypeStruct((2, 16, 16, 128), jnp.float32))
    diagnostic = info.value.diagnostic
    assert (diagnostic.code, diagnostic.stage) == ("shape.channels", "layer2.0")
    assert diagnostic.expected == "float b h w 64"


def test_a_bottleneck_too_narrow_to_have_a_width_names_its_entry():
    layers = [{"type": "bottleneck", "features": 3}, {"type": "gap"}]
    with pytest.raises(ConfigError) as info:
        build_model("sequential", (8, 8, 3), 3, layers, rngs=nnx.Rngs(0))
    diagnostic = info.value.diagnostic
    assert (diagnostic.code, diagnostic.got) == ("config.value", "features = 3")
    assert diagnostic.hint == "features = 256 in [model] layers[0] (bottleneck)"
    layers[0] = {"type": "bottleneck", "features": 256}  # the fix builds
    assert build_model("sequential", (8, 8, 3), 256, layers, rngs=nnx.Rngs(0))
    layers[0] = {"type": "bottleneck", "features": 3, "width": 2}  # or a width of its own
    assert build_model("sequential", (8, 8, 3), 3, layers, rngs=nnx.Rngs(0))


def test_small_inputs_get_the_small_stem():
    """Below 64 px: one 3x3 conv at stride 1 and no max pool (8x8 would be 2x2 before
    the first block); resnet18 keeps the network it had, resnet34/50 torchvision's
    stages. From 64 px: torchvision's 7x7 stride-2 stem and max pool."""
    for name in ("resnet34", "resnet50"):
        small = MODELS.get(name)((32, 32, 3), 10, ())
        assert [e["name"] for e in small[:3]] == ["conv1", "bn1", "layer1.0"]
        assert (small[0]["kernel"], small[0]["stride"], small[0]["padding"]) == (3, 1, 1)
        large = MODELS.get(name)((64, 64, 3), 10, ())
        assert (large[0]["kernel"], large[0]["stride"], large[0]["padding"]) == (7, 2, 3)
        assert large[2] == {"type": "maxpool", "window": 3, "stride": 2, "padding": 1,
                            "name": "maxpool"}  # fmt: skip
    small18 = MODELS.get("resnet18")((63, 63, 3), 10, ())
    assert {e["type"] for e in small18} == {"conv", "batchnorm", "residual", "gap", "dense"}
    assert small18[2]["name"] == "stage1.block1"
    assert build_model("resnet50", (8, 8, 3), 3, rngs=nnx.Rngs(0))  # shrinks to 1x1, no less


@pytest.mark.parametrize(("name", "jit"), [("resnet18", False), ("resnet34", True)])
def test_logits_equal_torchvisions(name, jit, reference):
    reference.assert_same_logits(torchvision_model(name, 10), name, (64, 64, 3), 10, jit=jit)


def test_resnet50_logits_equal_torchvisions(reference):
    reference.assert_same_logits(torchvision_model("resnet50", 10), "resnet50", (64, 64, 3), 10)


def test_the_small_stem_is_torchvisions_network_with_a_3x3_stem(reference):
    """resnet50 at 32 px is torchvision's with conv1 a 3x3 stride-1 conv and no max
    pool (the common CIFAR change), and loads such a network's weights."""
    torch = pytest.importorskip("torch")
    torch_model = torchvision_model("resnet50", 10)
    torch_model.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    torch_model.maxpool = torch.nn.Identity()
    reference.assert_same_logits(torch_model, "resnet50", (32, 32, 3), 10, jit=True)


def test_imagenet_weights_do_not_fit_the_small_stem(reference, tmp_path):
    """A 224 px checkpoint's 7x7 conv1 is refused by the 3x3 small-input stem, by name."""
    path = reference.save_state_dict(
        torchvision_model("resnet34", 10), tmp_path / "r34.safetensors"
    )
    with pytest.raises(ContractError) as info:
        build_model("resnet34", (32, 32, 3), 10, weights=path, rngs=nnx.Rngs(0))
    diagnostic = info.value.diagnostic
    assert diagnostic.code == "weights.mismatch"
    assert diagnostic.items == (
        "shape conv1.weight: the model needs 64x3x3x3 F32, the file has 64x3x7x7 F32",
    )


PREFLIGHT = """
name = "resnet50-224"
[data]
source = "synthetic"
num_samples = 200
[model]
name = "resnet50"
input = [224, 224, 3]
num_classes = 10
[train]
batch_size = 1
"""


def test_summary_of_a_224px_resnet50_config():
    rows = summarize(parse_config(PREFLIGHT))
    assert [row.name for row in rows[:3]] == ["data", "conv1", "bn1"]
    head = 2048 * (1000 - 10) + (1000 - 10)  # torchvision's 1000-class fc, less 10 classes'
    assert sum(row.params for row in rows) == TORCHVISION["resnet50"][0] - head
    assert (rows[-1].name, rows[-1].kind, rows[-1].output) == ("fc", "dense", "b 10")


def test_preflight_estimates_a_224px_resnet50_step(monkeypatch):
    """check compiles the train step on shapes alone; on a device too small for it, the
    estimate is reported. A float32 Adam step holds the parameters, their gradients
    and two moments (23.5M x 4 x 4 bytes = 0.35 GiB) plus the activations."""
    monkeypatch.setattr(preflight, "device_memory", lambda: (2**20, "a 1 MiB test device"))
    (diagnostic,) = check_draft(parse_draft(PREFLIGHT))
    assert (diagnostic.code, diagnostic.stage) == ("memory.exceeds", "[train]")
    need = float(re.search(r"needs ([\d.]+) GiB per device for batch 1", diagnostic.message)[1])
    assert 0.35 < need < 4.0
    assert diagnostic.hint.startswith("even one image does not fit")
