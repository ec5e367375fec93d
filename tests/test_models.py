"""One shared suite every registered model must pass (as optax makes every optimizer
reach the optimum of a parabola)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from typedpipe import MODELS, ConfigError, ContractError, build_model

# Smallest input each architecture is meant for, and a sequential layer list.
INPUTS = {
    "small_cnn": (8, 8, 1),
    "lenet": (32, 32, 1),
    "resnet20": (8, 8, 3),
    "resnet18": (8, 8, 3),
    "resnet34": (8, 8, 3),
    "resnet50": (8, 8, 3),
    "convnext_tiny": (32, 32, 3),
    "vit_b_16": (16, 16, 3),
    "vit_s_16": (16, 16, 3),
    "sequential": (8, 8, 1),
}
LAYERS = (
    {"type": "conv", "features": 8, "activation": "relu"},
    {"type": "maxpool"},
    {"type": "flatten"},
    {"type": "dense", "features": 3},
)


def make(name, num_classes=3, seed=0):
    layers = ()
    if name == "sequential":
        layers = (*LAYERS[:-1], {"type": "dense", "features": num_classes})
    return build_model(name, INPUTS[name], num_classes, layers, rngs=nnx.Rngs(seed))


def test_every_registered_model_is_covered():
    assert set(INPUTS) == set(MODELS)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_finite_logits_of_declared_shape(name, run):
    model = make(name)
    model.eval()
    out = run(lambda x: model(x), jnp.ones((2, *INPUTS[name])))
    assert out.shape == (2, 3)
    assert bool(jnp.isfinite(out).all())


@pytest.mark.parametrize("name", sorted(MODELS))
def test_stable_in_bfloat16(name):
    model = make(name)
    model.eval()
    graph, state = nnx.split(model)
    state = jax.tree.map(
        lambda x: x.astype(jnp.bfloat16) if jnp.issubdtype(x.dtype, jnp.floating) else x, state
    )
    x = jax.random.uniform(jax.random.key(0), (4, *INPUTS[name]), jnp.bfloat16)
    out = nnx.merge(graph, state)(x)
    assert out.dtype == jnp.bfloat16
    assert bool(jnp.isfinite(out).all())


@pytest.mark.parametrize("name", sorted(MODELS))
def test_learns_a_tiny_problem_without_recompiling(name):
    """Two classes that differ in brightness: a few steps must cut the loss."""
    model = make(name, num_classes=2)
    optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)
    key = jax.random.key(0)
    labels = jnp.arange(16) % 2
    brightness = labels.astype(jnp.float32).reshape(16, 1, 1, 1) * 0.5
    images = jax.random.uniform(key, (16, *INPUTS[name])) * 0.5 + brightness
    traces = 0

    @nnx.jit
    def step(model, optimizer, images, labels):
        nonlocal traces
        traces += 1

        def loss_fn(model):
            logits = model(images)
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        with jax.numpy_dtype_promotion("standard"):  # optax is not strict-promotion clean
            optimizer.update(model, grads)
        return loss

    losses = [float(step(model, optimizer, images, labels)) for _ in range(25)]
    assert traces == 1
    assert all(np.isfinite(losses))
    assert losses[-1] < 0.5 * losses[0]


def test_wrong_input_is_reported_at_the_model_boundary():
    model = build_model("small_cnn", (64, 64, 3), 10, rngs=nnx.Rngs(0))
    cases = [
        ((2, 32, 32, 3), jnp.float32, "shape.spatial", "float32 2 32 32 3"),
        ((2, 64, 64, 1), jnp.float32, "shape.channels", "float32 2 64 64 1"),
        ((2, 64, 64, 3), jnp.uint8, "dtype.input", "uint8 2 64 64 3"),
        ((2, 3, 64, 64), jnp.float32, "shape.layout", "float32 2 3 64 64"),
    ]
    for shape, dtype, code, got in cases:
        with pytest.raises(ContractError) as info:
            jax.jit(lambda x: model(x)).trace(jax.ShapeDtypeStruct(shape, dtype))
        diagnostic = info.value.diagnostic
        assert (diagnostic.code, diagnostic.stage, diagnostic.got) == (code, "model", got)
        assert diagnostic.expected == "float b 64 64 3"


def test_lenet_on_8x8_names_the_collapsing_layer_and_the_flow():
    with pytest.raises(ContractError) as info:
        build_model("lenet", (8, 8, 1), 10, rngs=nnx.Rngs(0))
    diagnostic = info.value.diagnostic
    assert (diagnostic.code, diagnostic.stage) == ("model.shape", "conv2")
    assert "input 8x8x1 -> conv0 4x4x6 -> avgpool1 2x2x6" in diagnostic.message


def test_head_must_match_num_classes():
    with pytest.raises(ContractError, match="not one logit per class"):
        build_model("sequential", (8, 8, 1), 10, LAYERS, rngs=nnx.Rngs(0))


def test_unknown_model_lists_the_registry():
    with pytest.raises(ConfigError) as info:
        build_model("resnet19", (8, 8, 1), 10, rngs=nnx.Rngs(0))
    diagnostic = info.value.diagnostic
    assert diagnostic.code == "config.unknown_model"
    assert "resnet18" in diagnostic.expected and "did you mean" in diagnostic.hint


def test_abstract_build_allocates_nothing():
    model = nnx.eval_shape(lambda: build_model("resnet18", (224, 224, 3), 1000, rngs=nnx.Rngs(0)))
    leaves = jax.tree.leaves(nnx.state(model, nnx.Param))
    assert all(isinstance(leaf, jax.ShapeDtypeStruct) for leaf in leaves)
    assert 11_000_000 < sum(leaf.size for leaf in leaves) < 12_000_000
