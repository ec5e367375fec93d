import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from typedpipe import ContractError, ImageSpec, Preprocess, make_stage
from typedpipe.pipeline.stages import STAGES

KEY = jax.random.key(0)

# One working configuration per stage: params, input batch, expected output shape.
CASES = {
    "to_float": ({"scale": 1 / 255}, np.full((2, 8, 8, 1), 255, np.uint8), (2, 8, 8, 1)),
    "normalize": (
        {"mean": (0.5,) * 3, "std": (0.25,) * 3},
        np.ones((2, 8, 8, 3), np.float32),
        (2, 8, 8, 3),
    ),
    "resize": ({"height": 16, "width": 12}, np.ones((2, 8, 8, 1), np.float32), (2, 16, 12, 1)),
    "center_crop": ({"height": 4, "width": 6}, np.ones((2, 8, 8, 3), np.float32), (2, 4, 6, 3)),
    "random_crop": (
        {"height": 6, "width": 6, "padding": 1},
        np.ones((2, 8, 8, 3), np.float32),
        (2, 6, 6, 3),
    ),
    "random_flip": ({}, np.arange(2 * 8 * 8, dtype=np.float32).reshape(2, 8, 8, 1), (2, 8, 8, 1)),
    "to_rgb": ({}, np.ones((2, 8, 8, 1), np.float32), (2, 8, 8, 3)),
    "to_gray": ({}, np.ones((2, 8, 8, 3), np.float32), (2, 8, 8, 1)),
    "random_resized_crop": (
        {"height": 6, "width": 6},
        np.ones((2, 8, 8, 3), np.float32),
        (2, 6, 6, 3),
    ),
    "color_jitter": (
        {"brightness": 0.2, "contrast": 0.2, "saturation": 0.2, "hue": 0.1},
        np.full((2, 8, 8, 3), 0.5, np.float32),
        (2, 8, 8, 3),
    ),
    "rand_augment": (
        {"num_ops": 1, "magnitude": 5},
        np.full((2, 8, 8, 3), 0.5, np.float32),
        (2, 8, 8, 3),
    ),
    "random_erasing": ({"probability": 1.0}, np.ones((2, 8, 8, 3), np.float32), (2, 8, 8, 3)),
}

# A broken input per stage: (abstract batch, code, the "got" text the message must show).
BROKEN = {
    "to_float": (jax.ShapeDtypeStruct((2, 8, 8, 1), jnp.float32), "dtype.input", "float32 2 8 8 1"),
    "normalize": (
        jax.ShapeDtypeStruct((2, 8, 8, 1), jnp.float32),
        "shape.channels",
        "float32 2 8 8 1",
    ),
    "resize": (jax.ShapeDtypeStruct((2, 8, 8, 1), jnp.uint8), "dtype.input", "uint8 2 8 8 1"),
    "center_crop": (
        jax.ShapeDtypeStruct((2, 3, 3, 3), jnp.float32),
        "shape.spatial",
        "float32 b 3 3 3",
    ),
    "random_crop": (
        jax.ShapeDtypeStruct((2, 3, 3, 3), jnp.float32),
        "shape.spatial",
        "float32 b 3 3 3",
    ),
    "random_flip": (jax.ShapeDtypeStruct((8, 8, 1), jnp.float32), "shape.rank", "float32 8 8 1"),
    "to_rgb": (
        jax.ShapeDtypeStruct((2, 8, 8, 3), jnp.float32),
        "shape.channels",
        "float32 2 8 8 3",
    ),
    "to_gray": (
        jax.ShapeDtypeStruct((2, 8, 8, 1), jnp.float32),
        "shape.channels",
        "float32 2 8 8 1",
    ),
    "random_resized_crop": (
        jax.ShapeDtypeStruct((2, 8, 8, 3), jnp.uint8),
        "dtype.input",
        "uint8 2 8 8 3",
    ),
    "color_jitter": (
        jax.ShapeDtypeStruct((2, 8, 8, 1), jnp.float32),
        "shape.channels",
        "float32 b 8 8 1",
    ),
    "rand_augment": (
        jax.ShapeDtypeStruct((2, 8, 8, 3), jnp.uint8),
        "dtype.input",
        "uint8 2 8 8 3",
    ),
    "random_erasing": (jax.ShapeDtypeStruct((8, 8, 3), jnp.float32), "shape.rank", "float32 8 8 3"),
}


def test_every_registered_stage_is_covered():
    assert set(CASES) == set(STAGES) == set(BROKEN)


def apply(stage, images, call):
    if stage.augmentation:
        return call(lambda x, k: stage(x, k), images, KEY)
    return call(stage, images)


def eager(fn, *args):
    return fn(*args)


def jitted(fn, *args):
    return jax.jit(fn)(*args)


@pytest.mark.parametrize("op", sorted(CASES))
def test_stage_output_matches_annotation_and_in_spec(op, run):
    params, images, shape = CASES[op]
    stage = make_stage(op, **params)
    out = apply(stage, jnp.asarray(images), run)
    assert out.shape == shape
    spec = ImageSpec(*images.shape[1:], str(images.dtype), (0.0, float(images.max())))
    assert stage.in_spec(spec).shape == shape[1:]
    assert bool(jnp.isfinite(out.astype(jnp.float32)).all())


@pytest.mark.parametrize("op", sorted(CASES))
def test_eager_and_jit_agree(op):
    params, images, _ = CASES[op]
    stage = make_stage(op, **params)
    np.testing.assert_allclose(
        apply(stage, jnp.asarray(images), eager),
        apply(stage, jnp.asarray(images), jitted),
        rtol=1e-6,
    )


@pytest.mark.parametrize("op", sorted(BROKEN))
def test_broken_input_fails_while_tracing(op):
    """The input is abstract (no data exists), so the error comes from tracing alone."""
    params, _, _ = CASES[op]
    stage = make_stage(op, **params)
    abstract, code, got = BROKEN[op]
    fn = (lambda x: stage(x, KEY)) if stage.augmentation else stage
    with pytest.raises(ContractError) as info:
        jax.jit(fn).trace(abstract)
    diagnostic = info.value.diagnostic
    assert diagnostic.code == code
    assert diagnostic.stage == op
    assert diagnostic.got == got
    assert diagnostic.expected and diagnostic.hint
    assert op in str(info.value) and got in str(info.value)


def test_message_resolves_configured_sizes():
    """`{self.channels}` in the annotation is printed as the number, never the template."""
    stage = make_stage("normalize", mean=(0.5,) * 3, std=(0.5,) * 3)
    with pytest.raises(ContractError) as info:
        stage(jnp.ones((2, 8, 8, 1)))
    assert info.value.diagnostic.expected == "float b h w 3"
    assert "{self" not in str(info.value)


def test_contract_error_is_a_type_error_shown_as_public_name():
    assert issubclass(ContractError, TypeError)
    assert ContractError.__module__ == "typedpipe"


def test_augmentations_are_skipped_at_evaluation():
    pre = Preprocess(
        (make_stage("random_flip"), make_stage("random_crop", height=8, width=8, padding=2))
    )
    images = jnp.arange(2 * 8 * 8, dtype=jnp.float32).reshape(2, 8, 8, 1)
    np.testing.assert_array_equal(pre(images, train=False), images)
    augmented = jax.jit(lambda x, k: pre(x, k, train=True))(images, KEY)
    assert augmented.shape == images.shape
    assert not np.array_equal(augmented, images)


def test_to_float_and_normalize_map_the_value_range():
    pre = Preprocess((make_stage("to_float"), make_stage("normalize", mean=(0.5,), std=(0.25,))))
    spec = pre.in_spec(ImageSpec(8, 8, 1, "uint8", (0.0, 255.0)))
    assert spec.dtype == "float32"
    assert spec.value_range == pytest.approx((-2.0, 2.0))
    out = pre(jnp.full((1, 8, 8, 1), 255, jnp.uint8))
    assert float(out.max()) == pytest.approx(2.0)


def test_pipeline_names_the_broken_stage_by_position():
    pre = Preprocess((make_stage("to_float"), make_stage("to_rgb"), make_stage("to_rgb")))
    with pytest.raises(ContractError) as info:
        pre.in_spec(ImageSpec(8, 8, 1, "uint8", (0.0, 255.0)))
    assert info.value.diagnostic.stage == "preprocess[2] to_rgb"
    assert info.value.diagnostic.code == "shape.channels"


def test_stages_are_frozen_and_hashable():
    stage = make_stage("resize", height=4, width=4)
    with pytest.raises(dataclasses.FrozenInstanceError):
        stage.height = 5
    assert hash(stage) == hash(make_stage("resize", height=4, width=4))
