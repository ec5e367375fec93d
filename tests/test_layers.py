import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from typedpipe import ConfigError, ContractError
from typedpipe.models.layers import LAYERS

RNGS = nnx.Rngs(0)

# One working layer per type: constructor params, input shape (per image), output shape.
CASES = {
    "conv": (
        {"in_features": 3, "features": 8, "kernel": 3, "stride": 2, "padding": "valid"},
        (9, 9, 3),
        (4, 4, 8),
    ),
    "maxpool": ({"window": 2}, (8, 8, 3), (4, 4, 3)),
    "avgpool": ({"window": 3, "stride": 1, "padding": "same"}, (8, 8, 3), (8, 8, 3)),
    "gap": ({}, (4, 4, 5), (5,)),
    "flatten": ({}, (2, 3, 4), (24,)),
    "dense": ({"in_features": 6, "features": 4, "activation": "relu"}, (6,), (4,)),
    "batchnorm": ({"in_features": 3}, (4, 4, 3), (4, 4, 3)),
    "dropout": ({"rate": 0.5}, (4, 4, 3), (4, 4, 3)),
    "residual": ({"in_features": 3, "features": 8, "stride": 2}, (8, 8, 3), (4, 4, 8)),
    "basic_block": ({"in_features": 3, "features": 8, "stride": 2}, (9, 9, 3), (5, 5, 8)),
    "bottleneck": ({"in_features": 8, "features": 8, "stride": 2}, (7, 6, 8), (4, 3, 8)),
    "layernorm": ({"in_features": 4}, (6, 6, 4), (6, 6, 4)),
    "convnext_block": ({"in_features": 8, "drop_path": 0.2}, (7, 7, 8), (7, 7, 8)),
    "patch_embed": ({"in_features": 3, "features": 8, "patch": 4}, (8, 12, 3), (6, 8)),
    "class_token": ({"in_features": 8}, (6, 8), (7, 8)),
    "position_embedding": ({"in_features": 8, "in_tokens": 6}, (6, 8), (6, 8)),
    "encoder_block": ({"in_features": 8, "heads": 2, "mlp_features": 16}, (5, 8), (5, 8)),
    "token_pool": ({"pool": "class"}, (5, 8), (8,)),
}

# A wrong input per type: per-image shape, dtype, expected code.
BROKEN = {
    "conv": ((9, 9, 1), jnp.float32, "shape.channels"),
    "maxpool": ((8, 8, 3), jnp.int32, "dtype.input"),
    "avgpool": ((8, 8), jnp.float32, "shape.rank"),
    "gap": ((4, 4, 5), jnp.uint8, "dtype.input"),
    "flatten": ((24,), jnp.float32, "shape.rank"),
    "dense": ((7,), jnp.float32, "model.shape"),
    "batchnorm": ((4, 4, 1), jnp.float32, "shape.channels"),
    "dropout": ((4, 4, 3), jnp.uint8, "dtype.input"),
    "residual": ((8, 8, 4), jnp.float32, "shape.channels"),
    "basic_block": ((8, 8), jnp.float32, "shape.rank"),
    "bottleneck": ((8, 8, 8), jnp.int32, "dtype.input"),
    "layernorm": ((6, 6, 5), jnp.float32, "shape.channels"),
    "convnext_block": ((7, 7, 8), jnp.int32, "dtype.input"),
    "patch_embed": ((8, 8, 1), jnp.float32, "shape.channels"),
    "class_token": ((6, 4), jnp.float32, "model.shape"),
    "position_embedding": ((5, 8), jnp.float32, "model.shape"),
    "encoder_block": ((4, 4, 8), jnp.float32, "shape.rank"),
    "token_pool": ((5, 8), jnp.uint8, "dtype.input"),
}


def make(kind):
    params, _, _ = CASES[kind]
    return LAYERS[kind](**params, name=f"my_{kind}", rngs=RNGS)


@pytest.fixture(params=["eager", "jit"])
def apply(request):
    """Call a layer eagerly or under nnx.jit (which carries its mutable state across)."""
    if request.param == "eager":
        return lambda layer, x: layer(x)
    return nnx.jit(lambda layer, x: layer(x))


def test_every_registered_layer_is_covered():
    assert set(CASES) == set(LAYERS) == set(BROKEN)


@pytest.mark.parametrize("kind", sorted(CASES))
def test_output_shape_as_declared(kind, apply):
    layer = make(kind)
    _, in_shape, out_shape = CASES[kind]
    assert layer.output_shape(in_shape) == out_shape
    out = apply(layer, jnp.ones((2, *in_shape)))
    assert out.shape == (2, *out_shape)
    assert bool(jnp.isfinite(out).all())


@pytest.mark.parametrize("kind", sorted(CASES))
def test_eager_and_jit_agree(kind):
    layer = make(kind)
    layer.eval()
    x = jax.random.normal(jax.random.key(1), (2, *CASES[kind][1]))
    np.testing.assert_allclose(layer(x), jax.jit(lambda x: layer(x))(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_broken_input_fails_while_tracing(kind):
    layer = make(kind)
    shape, dtype, code = BROKEN[kind]
    with pytest.raises(ContractError) as info:
        jax.jit(lambda x: layer(x)).trace(jax.ShapeDtypeStruct((2, *shape), dtype))
    diagnostic = info.value.diagnostic
    assert diagnostic.code == code
    assert diagnostic.stage == f"my_{kind}"
    assert " ".join(map(str, shape)) in diagnostic.got
    assert diagnostic.expected and diagnostic.hint


def test_stride_that_collapses_the_map_names_the_layer():
    conv = LAYERS["conv"](3, 8, kernel=3, stride=3, padding="valid", name="conv3", rngs=RNGS)
    with pytest.raises(ContractError) as info:
        conv.output_shape((2, 2, 3))
    diagnostic = info.value.diagnostic
    assert (diagnostic.code, diagnostic.stage) == ("model.shape", "conv3")
    assert "shrinks 2x2 to 0x0" in diagnostic.message
    # The same fault surfaces from the typed call, before XLA sees a negative size.
    with pytest.raises(ContractError, match="shrinks 2x2 to 0x0"):
        jax.jit(lambda x: conv(x)).trace(jax.ShapeDtypeStruct((1, 2, 2, 3), jnp.float32))


def test_output_size_follows_padding_and_stride():
    for padding, stride, expected in [
        ("same", 1, 7),
        ("same", 2, 4),
        ("valid", 1, 5),
        ("valid", 2, 3),
        (0, 1, 5),  # an int pads that many pixels on every side: (7 + 2p - 3) // stride + 1
        (1, 1, 7),
        (1, 2, 4),
        (2, 2, 5),
    ]:
        conv = LAYERS["conv"](1, 2, kernel=3, stride=stride, padding=padding, rngs=RNGS)
        assert conv.output_shape((7, 7, 1))[0] == expected
        assert conv(jnp.ones((1, 7, 7, 1))).shape[1] == expected


@pytest.mark.parametrize(
    ("kind", "params", "most"),
    [
        ("conv", {"in_features": 1, "features": 2, "kernel": 3}, 2),
        ("maxpool", {"window": 3}, 1),
        ("avgpool", {"window": 3}, 1),
    ],
)
def test_an_int_padding_is_bounded_by_the_window(kind, params, most):
    """A conv's padding stops at kernel - 1, a pool's at window // 2 (PyTorch's rule):
    beyond, some outputs would see padding alone."""
    LAYERS[kind](**params, padding=most, name="p", rngs=RNGS)
    with pytest.raises(ConfigError) as info:
        LAYERS[kind](**params, padding=most + 1, name="p", rngs=RNGS)
    diagnostic = info.value.diagnostic
    assert (diagnostic.code, diagnostic.stage) == ("config.value", "p")
    assert f"padding {most + 1} on a 3x3 window must be in [0, {most}]" in diagnostic.message
    assert diagnostic.got == f"padding = {most + 1}"
    assert diagnostic.hint == "padding = 1 in this layer"


def test_an_int_padding_out_of_range_names_the_config_entry():
    from typedpipe import build_model

    layers = [{"type": "conv", "features": 2, "kernel": 3, "padding": 5}, {"type": "gap"}]
    with pytest.raises(ConfigError) as info:
        build_model("sequential", (8, 8, 1), 2, layers, rngs=RNGS)
    assert info.value.diagnostic.hint == "padding = 1 in [model] layers[0] (conv)"


def test_bad_layer_params_are_config_errors():
    with pytest.raises(ConfigError) as info:
        LAYERS["conv"].build((8, 8, 1), name="c", rngs=RNGS, features=4, paddin="same")
    assert info.value.diagnostic.code == "config.unknown_key"
    assert info.value.diagnostic.hint == "rename paddin to padding in [model] layer c (conv)"
    with pytest.raises(ConfigError, match="no activation named 'rleu'"):
        LAYERS["dense"](4, 2, activation="rleu", rngs=RNGS)


def test_dropout_only_in_training_mode():
    layer = make("dropout")
    x = jnp.ones((2, 4, 4, 3))
    assert not np.array_equal(layer(x), x)
    layer.eval()
    np.testing.assert_array_equal(layer(x), x)
