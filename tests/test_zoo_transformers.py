"""The ImageNet zoo's ConvNeXt and Vision Transformers against their references:
torchvision's convnext_tiny and vit_b_16, timm's vit_small_patch16_224 (random weights,
nothing downloaded). Parameter counts, FLOPs, the input rules, and eval-mode logits."""

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from typedpipe import ConfigError, ContractError, build_model
from typedpipe.models.layers import LAYERS
from typedpipe.models.summary import layer_rows

ZOO = ("convnext_tiny", "vit_b_16", "vit_s_16")


@functools.cache
def abstract(name, input_shape=(224, 224, 3), num_classes=1000):
    """The model built on shapes alone: nothing allocated, every layer's shape checked."""
    return nnx.eval_shape(lambda: build_model(name, input_shape, num_classes, rngs=nnx.Rngs(0)))


def torch_model(name, image_size=224, num_classes=1000):
    """The PyTorch model typedpipe's must equal, with random weights."""
    import timm
    import torchvision

    if name == "vit_s_16":
        return timm.create_model(
            "vit_small_patch16_224", pretrained=False, img_size=image_size, num_classes=num_classes
        )
    if name == "vit_b_16":
        return torchvision.models.vit_b_16(image_size=image_size, num_classes=num_classes)
    return torchvision.models.get_model(name, num_classes=num_classes)


def on_meta(name, **kwargs):
    """The reference built on PyTorch's meta device: shapes without memory or initialisation."""
    import torch

    with torch.device("meta"):
        return torch_model(name, **kwargs)


# --- parameters, FLOPs, summary --------------------------------------------------------------


@pytest.mark.parametrize("name", ZOO)
@pytest.mark.parametrize("size", [224, 64])
def test_parameter_count_equals_the_reference(name, size):
    ours = sum(row.params for row in layer_rows(abstract(name, (size, size, 3), 10)))
    theirs = sum(p.numel() for p in on_meta(name, image_size=size, num_classes=10).parameters())
    assert ours == theirs


def _published_gmacs(name):
    """Multiply-adds per 224 px image as published: torchvision's weight tables, timm's card."""
    import torchvision

    if name == "vit_s_16":
        return 4.6  # timm's model card for vit_small_patch16_224
    weights = torchvision.models.get_model_weights(name)
    return weights.IMAGENET1K_V1.meta["_ops"]


@pytest.mark.parametrize("name", ZOO)
def test_flops_close_to_published(name):
    flops = sum(row.flops for row in layer_rows(abstract(name)))
    # 2 FLOPs per multiply-add here; the published counts leave out norms and activations.
    assert flops / 2e9 == pytest.approx(_published_gmacs(name), rel=0.02)


def test_layers_are_named_as_the_reference_names_its_modules():
    names = {name: [row.name for row in layer_rows(abstract(name, (32, 32, 3)))] for name in ZOO}
    assert names["convnext_tiny"][:5] == [
        "features.0.0",
        "features.0.1",
        "features.1.0",
        "features.1.1",
        "features.1.2",
    ]
    assert names["convnext_tiny"][-3:] == ["avgpool", "classifier.0", "classifier.2"]
    assert names["vit_b_16"][:4] == [
        "conv_proj",
        "class_token",
        "encoder.pos_embedding",
        "encoder.layers.encoder_layer_0",
    ]
    assert names["vit_b_16"][-3:] == ["encoder.ln", "pool", "heads.head"]
    assert names["vit_s_16"][:4] == ["patch_embed.proj", "cls_token", "pos_embed", "blocks.0"]
    assert names["vit_s_16"][-3:] == ["norm", "pool", "head"]


def test_summary_rows_state_token_shapes():
    rows = {row.name: row for row in layer_rows(abstract("vit_s_16", (64, 64, 3), 10))}
    assert rows["patch_embed.proj"].output == "b 16 384"
    assert rows["cls_token"].output == "b 17 384"
    assert rows["blocks.11"].output == "b 17 384"
    assert rows["pool"].output == "b 384"
    assert rows["head"].output == "b 10"
    assert rows["pos_embed"].params == 17 * 384


# --- input rules -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "size", "fix"),
    [
        ("vit_b_16", (60, 70, 3), "input = [64, 64, 3] under [model]"),
        ("vit_s_16", (224, 200, 3), "input = [224, 208, 3] under [model]"),
        ("vit_s_16", (7, 7, 3), "input = [16, 16, 3] under [model]"),
        ("convnext_tiny", (16, 40, 3), "input = [32, 40, 3] under [model]"),
    ],
)
def test_an_input_the_model_cannot_take_names_the_nearest_that_fits(name, size, fix):
    with pytest.raises(ContractError) as info:
        abstract(name, size)
    diagnostic = info.value.diagnostic
    assert (diagnostic.code, diagnostic.stage) == ("model.shape", "model")
    assert diagnostic.got == f"input = [{size[0]}, {size[1]}, {size[2]}]"
    assert diagnostic.hint.startswith(fix)
    # Following the hint builds the model.
    fixed = tuple(int(v) for v in fix.split("[")[1].split("]")[0].split(", "))
    assert layer_rows(abstract(name, fixed))[-1].output == "b 1000"


def test_position_embedding_is_sized_to_the_configured_input():
    rows = {row.name: row for row in layer_rows(abstract("vit_b_16", (32, 48, 3)))}
    assert rows["encoder.pos_embedding"].params == (2 * 3 + 1) * 768


def cli(capsys, tmp_path, command, config):
    """`typedpipe COMMAND config.toml --json`, in this process: (exit code, the JSON)."""
    import tomli_w

    from typedpipe.cli import main

    path = tmp_path / "config.toml"
    path.write_text(tomli_w.dumps(config))
    code = main([command, str(path), "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_check_names_the_input_that_fits_and_summary_counts_the_reference(tmp_path, capsys):
    from typedpipe.cli import EXIT_INVALID, EXIT_OK

    config = {
        "data": {"source": "synthetic", "num_samples": 40},
        "model": {"name": "vit_s_16", "input": [60, 60, 3], "num_classes": 4},
        "train": {"batch_size": 4},
    }
    code, result = cli(capsys, tmp_path, "check", config)
    assert code == EXIT_INVALID
    (diagnostic,) = result["diagnostics"]
    assert (diagnostic["code"], diagnostic["stage"]) == ("model.shape", "model")
    assert diagnostic["hint"].startswith("input = [64, 64, 3] under [model]")
    config["model"]["input"] = [64, 64, 3]  # the hint, followed
    code, result = cli(capsys, tmp_path, "summary", config)
    assert code == EXIT_OK
    rows = {row["name"]: row for row in result["rows"]}
    assert rows["pos_embed"]["output"] == "b 17 384"
    assert rows["head"]["params"] == 384 * 4 + 4
    reference = sum(
        p.numel() for p in on_meta("vit_s_16", image_size=64, num_classes=4).parameters()
    )
    assert result["params"] == reference


# --- layers ----------------------------------------------------------------------------------


def test_stochastic_depth_drops_whole_images_in_training_only():
    block = LAYERS["convnext_block"](8, layer_scale=1.0, drop_path=0.5, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(0), (32, 4, 4, 8))
    y = block(x)
    block.eval()
    residual = block(x) - x
    dropped = np.array([np.array_equal(y[i], x[i]) for i in range(32)])
    assert 0 < dropped.sum() < 32  # some images skip the block, whole
    # The others get the residual scaled by 1 / (1 - 0.5), so that its mean is kept.
    np.testing.assert_allclose((y - x)[~dropped], 2 * residual[~dropped], rtol=1e-4, atol=1e-5)


def test_heads_must_divide_features():
    with pytest.raises(ConfigError) as info:
        LAYERS["encoder_block"](10, heads=4, mlp_features=8, name="enc", rngs=nnx.Rngs(0))
    diagnostic = info.value.diagnostic
    assert (diagnostic.code, diagnostic.stage, diagnostic.hint) == (
        "config.value",
        "enc",
        "heads = 5",
    )


def test_attention_matches_torch_multihead_attention(run):
    """One encoder block against torchvision's, weights copied: the fused projection's
    [q | k | v] order, the per-head split and the 1/sqrt(head size) scale."""
    import torch
    from torchvision.models.vision_transformer import EncoderBlock

    torch.manual_seed(0)
    theirs = EncoderBlock(4, 32, 64, 0.0, 0.0).eval()
    with torch.no_grad():  # torch starts biases and norms at 0 and 1: nothing to tell apart
        for parameter in theirs.parameters():
            parameter.normal_(std=0.3)
    weights = {k: v.detach().numpy() for k, v in theirs.state_dict().items()}
    ours = LAYERS["encoder_block"](32, heads=4, mlp_features=64, rngs=nnx.Rngs(0))
    for attribute, prefix in [("norm1", "ln_1"), ("norm2", "ln_2")]:
        getattr(ours, attribute).scale[...] = weights[f"{prefix}.weight"]
        getattr(ours, attribute).bias[...] = weights[f"{prefix}.bias"]
    for attribute, prefix in [
        ("out", "self_attention.out_proj"),
        ("fc1", "mlp.0"),
        ("fc2", "mlp.3"),
    ]:
        getattr(ours, attribute).kernel[...] = weights[f"{prefix}.weight"].T
        getattr(ours, attribute).bias[...] = weights[f"{prefix}.bias"]
    ours.qkv.kernel[...] = weights["self_attention.in_proj_weight"].T
    ours.qkv.bias[...] = weights["self_attention.in_proj_bias"]
    x = np.random.default_rng(0).standard_normal((2, 5, 32)).astype(np.float32)
    with torch.no_grad():
        want = theirs(torch.from_numpy(x)).numpy()
    got = run(lambda x: ours(x), jnp.asarray(x))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


# --- weights imported from the reference -----------------------------------------------------

SIZE, CLASSES = 64, 10


def randomize(torch_model, seed=0):
    """Move every parameter the reference starts at a constant (norms at 1 and 0, layer
    scale at 1e-6, torchvision's zero ViT head and class token) off it, so that a tensor
    mapped to the wrong place shows in the logits."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in torch_model.parameters():
            if parameter.numel() > 1 and float(parameter.std()) == 0.0:
                noise = torch.randn(parameter.shape, generator=generator)
                parameter.add_(0.2 * noise)


@pytest.fixture(scope="module", params=ZOO)
def imported(request, reference, tmp_path_factory):
    """(name, the reference in eval mode, typedpipe's model loaded from its safetensors)."""
    name = request.param
    theirs = torch_model(name, image_size=SIZE, num_classes=CLASSES).eval()
    randomize(theirs)
    path = reference.save_state_dict(theirs, tmp_path_factory.mktemp(name) / "model.safetensors")
    ours = build_model(name, (SIZE, SIZE, 3), CLASSES, weights=path, rngs=nnx.Rngs(0))
    ours.eval()
    return name, theirs, ours, path


def test_logits_equal_the_reference(imported, reference, run):
    import torch

    _, theirs, ours, _ = imported
    images = np.random.default_rng(1).normal(size=(2, SIZE, SIZE, 3)).astype(np.float32)
    with torch.no_grad():
        expected = theirs(torch.from_numpy(images.transpose(0, 3, 1, 2))).numpy()
    got = np.asarray(run(lambda x: ours(x), jnp.asarray(images)))
    assert got.shape == expected.shape == (2, CLASSES)
    scale = float(np.abs(expected).max())
    assert scale > 0.1  # a head left at zero would compare zeros with zeros
    assert float(np.abs(got - expected).max()) <= reference.RTOL * scale


@pytest.mark.parametrize(
    ("shape", "dtype", "code"),
    [
        ((2, 48, 48, 3), jnp.float32, "shape.spatial"),
        ((2, SIZE, SIZE, 1), jnp.float32, "shape.channels"),
        ((2, 3, SIZE, SIZE), jnp.float32, "shape.layout"),
        ((2, SIZE, SIZE, 3), jnp.uint8, "dtype.input"),
    ],
)
def test_wrong_input_is_reported_at_the_model_boundary(imported, shape, dtype, code):
    _, _, ours, _ = imported
    with pytest.raises(ContractError) as info:
        jax.jit(lambda x: ours(x)).trace(jax.ShapeDtypeStruct(shape, dtype))
    diagnostic = info.value.diagnostic
    assert (diagnostic.code, diagnostic.stage) == (code, "model")
    assert diagnostic.expected == f"float b {SIZE} {SIZE} 3"


def test_weights_saved_at_another_image_size_are_a_mismatch(imported):
    name, _, _, path = imported
    if not name.startswith("vit"):
        pytest.skip("only a ViT's weights depend on the image size")
    with pytest.raises(ContractError) as info:
        build_model(name, (32, 32, 3), CLASSES, weights=path, rngs=nnx.Rngs(0))
    diagnostic = info.value.diagnostic
    assert diagnostic.code == "weights.mismatch"
    # 64 px: 4x4 patches and the class token; 32 px: 2x2 and the class token.
    positions, width = {"vit_b_16": ("encoder.pos_embedding", 768), "vit_s_16": ("pos_embed", 384)}[
        name
    ]
    assert diagnostic.items == (
        f"shape {positions}: the model needs 1x5x{width} F32, the file has 1x17x{width} F32",
    )
