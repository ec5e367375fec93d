"""The training-recipe stages (issue 23): random_resized_crop, color_jitter, rand_augment,
random_erasing and normalize's imagenet preset.

Each stage runs eagerly and under jax.jit (`run`); its output is held to what its
`in_spec` says; its randomness comes from its key alone (the same key, the same
output; another key or another image of the batch, another draw), so that a
resumed run draws what the uninterrupted one did; each bad value is a
`config.value` whose fix is tested as text; and a pipeline of all of them passes
`check` and trains.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from typedpipe import ConfigError, ContractError, ImageSpec, Preprocess, make_stage
from typedpipe.pipeline.check import check_draft, errors
from typedpipe.pipeline.config import parse_config, parse_draft
from typedpipe.pipeline.stages.boxes import sample_boxes
from typedpipe.pipeline.stages.image import NORMALIZE_PRESETS
from typedpipe.pipeline.stages.randaugment import RAND_AUGMENT_OPS, _apply, _equalize_plane

KEY = jax.random.key(0)
OTHER_KEY = jax.random.key(1)
RGB = ImageSpec(16, 16, 3, "float32", (0.0, 1.0))
GRAY = ImageSpec(16, 16, 1, "float32", (0.0, 1.0))


def pixels(shape=(4, 16, 16, 3), seed=0, low=0.0, high=1.0) -> jax.Array:
    return jax.random.uniform(jax.random.key(seed), shape, minval=low, maxval=high)


def augment(stage, images, key, run):
    return run(lambda x, k: stage(x, k), images, key)


def differ(a, b) -> bool:
    return not np.allclose(np.asarray(a), np.asarray(b))


def stage_diagnostics(stage_toml: str) -> list:
    """The config faults of a pipeline of one `[[preprocess]]` table."""
    return parse_draft(f"[[preprocess]]\n{stage_toml}\n").diagnostics


def only_fault(stage_toml: str):
    (diagnostic,) = stage_diagnostics(stage_toml)
    assert diagnostic.code == "config.value"
    return diagnostic


def refusal(pre: Preprocess, spec: ImageSpec):
    with pytest.raises(ContractError) as info:
        pre.in_spec(spec)
    return info.value.diagnostic


# --- random_resized_crop -----------------------------------------------------------------------


def test_random_resized_crop_output_is_what_in_spec_says(run):
    stage = make_stage("random_resized_crop", height=8, width=12)
    images = pixels((3, 20, 16, 3))
    out = augment(stage, images, KEY, run)
    spec = stage.in_spec(ImageSpec(20, 16, 3, "float32", (0.0, 1.0)))
    assert out.shape == (3, *spec.shape) == (3, 8, 12, 3)
    assert out.dtype == jnp.float32
    lo, hi = spec.value_range
    assert lo <= float(out.min()) and float(out.max()) <= hi


def test_random_resized_crop_is_keyed_and_per_image(run):
    stage = make_stage("random_resized_crop", height=8, width=8)
    same = jnp.broadcast_to(pixels((1, 16, 16, 3)), (4, 16, 16, 3))
    first = augment(stage, same, KEY, run)
    np.testing.assert_array_equal(first, augment(stage, same, KEY, run))
    assert differ(first, augment(stage, same, OTHER_KEY, run))
    # One image four times: each copy gets its own window.
    assert all(differ(first[0], first[i]) for i in range(1, 4))


def test_crop_boxes_meet_scale_and_ratio():
    """torchvision's draw: area share in `scale`, width / height in `ratio` (up to the
    rounding to whole pixels), and every box inside the image."""
    boxes = sample_boxes(KEY, 2000, (64, 48), (0.2, 0.6), (0.5, 2.0), within=(64, 48))
    found = np.asarray(boxes.found)
    assert found.mean() > 0.95
    height, width = (np.asarray(b)[found] for b in (boxes.height, boxes.width))
    top, left = (np.asarray(b)[found] for b in (boxes.top, boxes.left))
    area = height * width / (64 * 48)
    assert area.min() >= 0.2 - 0.03 and area.max() <= 0.6 + 0.03
    assert area.max() - area.min() > 0.3  # the whole range is drawn, not one value
    ratio = width / height
    assert ratio.min() >= 0.5 * 0.85 and ratio.max() <= 2.0 / 0.85
    assert (top >= 0).all() and (top + height <= 64).all()
    assert (left >= 0).all() and (left + width <= 48).all()


def coordinates(height: int, width: int) -> jax.Array:
    """An image whose channel 0 is each pixel's row and channel 1 its column (as a share
    of the side, at pixel centers): a resampled window shows where it came from."""
    rows = (jnp.arange(height, dtype=jnp.float32) + 0.5) / height
    cols = (jnp.arange(width, dtype=jnp.float32) + 0.5) / width
    grid = jnp.stack([*jnp.meshgrid(rows, cols, indexing="ij"), jnp.zeros((height, width))], -1)
    return grid[None]


def test_random_resized_crop_windows_have_the_asked_area():
    """A window of a quarter of the area and aspect 1 spans half of each side."""
    stage = make_stage("random_resized_crop", height=32, width=32, scale=[0.25, 0.25], ratio=[1, 1])
    images = jnp.broadcast_to(coordinates(16, 16), (8, 16, 16, 3))
    out = np.asarray(jax.jit(lambda x, k: stage(x, k))(images, KEY))
    # Upsampled 8 px -> 32 px: output pixels 2 and 29 sample the window 27/32 of its side
    # apart, both far enough inside the image for the bilinear ramp to be exact.
    row_span = (out[:, -3, :, 0] - out[:, 2, :, 0]).mean(axis=1) * 32 / 27
    col_span = (out[:, :, -3, 1] - out[:, :, 2, 1]).mean(axis=1) * 32 / 27
    np.testing.assert_allclose(row_span, 0.5, atol=0.02)
    np.testing.assert_allclose(col_span, 0.5, atol=0.02)
    assert np.unique(out[:, 16, 16, 0].round(3)).size > 1  # the windows are placed apart


def test_random_resized_crop_falls_back_to_the_center_where_nothing_fits():
    """A 4x64 strip cannot hold a square of 90% of its area: torchvision's fallback, the
    widest window of aspect in `ratio`, centered."""
    stage = make_stage("random_resized_crop", height=4, width=4, scale=[0.9, 1.0], ratio=[1, 1])
    out = np.asarray(stage(coordinates(4, 64), KEY))
    # The central 4x4 window: columns 30..33 of 64.
    np.testing.assert_allclose(out[0, 0, :, 1], (np.arange(30, 34) + 0.5) / 64, atol=1e-6)


def test_random_resized_crop_at_inference_is_the_center_crop_and_keeps_the_spec():
    pre = Preprocess((make_stage("random_resized_crop", height=8, width=8),))
    data = ImageSpec(20, 16, 3, "float32", (0.0, 1.0))
    assert (
        pre.in_spec(data, train=False)
        == pre.in_spec(data)
        == dataclasses.replace(data, height=8, width=8)
    )
    images = pixels((2, 20, 16, 3))
    out = jax.jit(lambda x: pre(x, train=False))(images)
    assert out.shape == (2, 8, 8, 3)
    np.testing.assert_allclose(out, pre(images, train=False), atol=1e-6)  # no randomness


def test_inference_crop_keeps_eval_crop_of_the_shorter_side():
    """timm's eval transform: with eval_crop 1 on an image of the output's size nothing
    changes; with 0.5 the central half of the shorter side is what is left."""
    whole = make_stage("random_resized_crop", height=16, width=16, eval_crop=1.0).at_inference()
    images = pixels((2, 16, 16, 3))
    np.testing.assert_allclose(whole(images), images, atol=1e-6)
    half = make_stage("random_resized_crop", height=8, width=8, eval_crop=0.5).at_inference()
    out = np.asarray(half(coordinates(16, 32)))
    # Of 16 rows the central 8 (4..11); of 32 columns the central 8 (12..19), at scale 1.
    np.testing.assert_allclose(out[0, :, 0, 0], (np.arange(4, 12) + 0.5) / 16, atol=1e-6)
    np.testing.assert_allclose(out[0, 0, :, 1], (np.arange(12, 20) + 0.5) / 32, atol=1e-6)


@pytest.mark.parametrize(
    ("toml", "got", "hint"),
    [
        (
            "scale = [0.6, 0.2]",
            "scale = [0.6, 0.2]",
            "scale = [0.08, 1.0] in [[preprocess]] #1 (random_resized_crop) (the default)",
        ),
        (
            "scale = [0.0, 1.0]",
            "scale = [0.0, 1.0]",
            "scale = [0.08, 1.0] in [[preprocess]] #1 (random_resized_crop) (the default)",
        ),
        (
            "ratio = [0.0, 2.0]",
            "ratio = [0.0, 2.0]",
            "ratio = [0.75, 1.3333333333333333] in [[preprocess]] #1 (random_resized_crop) "
            "(the default)",
        ),
        (
            "eval_crop = 1.5",
            "eval_crop = 1.5",
            "eval_crop = 0.875 in [[preprocess]] #1 (random_resized_crop) (the default)",
        ),
        ("scale = [0.5]", "scale = [0.5]", "set scale to a list [lo, hi] of 2 numbers"),
    ],
)
def test_random_resized_crop_bad_values_are_config_values_with_the_fix(toml, got, hint):
    fault = only_fault(f'op = "random_resized_crop"\nheight = 8\nwidth = 8\n{toml}')
    assert fault.got == got
    assert fault.hint == hint


def test_random_resized_crop_refuses_integer_pixels_with_to_float_before_it():
    pre = Preprocess((make_stage("random_resized_crop", height=8, width=8),))
    fault = refusal(pre, ImageSpec(16, 16, 3, "uint8", (0.0, 255.0)))
    assert fault.code == "dtype.input"
    assert fault.hint.startswith('add [[preprocess]] op = "to_float"')
    assert fault.hint.endswith("before [[preprocess]] #1 (random_resized_crop)")


# --- color_jitter ------------------------------------------------------------------------------

JITTER = {"brightness": 0.3, "contrast": 0.3, "saturation": 0.3, "hue": 0.1}


def test_color_jitter_output_is_what_in_spec_says(run):
    stage = make_stage("color_jitter", **JITTER)
    out = augment(stage, pixels(), KEY, run)
    spec = stage.in_spec(RGB)
    assert out.shape == (4, *spec.shape) and out.dtype == jnp.float32
    assert spec.value_range == (0.0, 1.0)
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def test_color_jitter_of_zero_is_the_identity(run):
    images = pixels()
    np.testing.assert_array_equal(augment(make_stage("color_jitter"), images, KEY, run), images)


@pytest.mark.parametrize("op", sorted(JITTER))
def test_each_jitter_changes_the_images_on_its_own_and_per_image(op):
    stage = make_stage("color_jitter", **{op: JITTER[op]})
    same = jnp.broadcast_to(pixels((1, 16, 16, 3), low=0.2, high=0.8), (4, 16, 16, 3))
    jitter = jax.jit(lambda x, k: stage(x, k))
    first = jitter(same, KEY)
    assert differ(first, same)
    assert all(differ(first[0], first[i]) for i in range(1, 4))
    np.testing.assert_array_equal(first, jitter(same, KEY))
    np.testing.assert_allclose(first, stage(same, KEY), atol=1e-6)  # eagerly, the same draws
    assert differ(first, jitter(same, OTHER_KEY))


def test_brightness_shifts_each_image_within_its_bound():
    """dm-pix's brightness is additive: each image moves by one delta in [-b, b]."""
    stage = make_stage("color_jitter", brightness=0.2)
    images = jnp.full((64, 4, 4, 3), 0.5)
    shift = np.asarray(stage(images, KEY) - images)
    per_image = shift[:, 0, 0, 0]
    np.testing.assert_allclose(shift, per_image[:, None, None, None] * np.ones_like(shift))
    assert np.abs(per_image).max() <= 0.2 and per_image.std() > 0.05


def test_color_jitter_on_gray_takes_brightness_and_contrast(run):
    stage = make_stage("color_jitter", brightness=0.3, contrast=0.3)
    assert stage.in_spec(GRAY) == GRAY
    out = augment(stage, pixels((4, 16, 16, 1)), KEY, run)
    assert out.shape == (4, 16, 16, 1)


@pytest.mark.parametrize(
    ("params", "message", "fix"),
    [
        (
            {"saturation": 0.3},
            "color_jitter's saturation needs colour, but the batch reaching it is grayscale",
            "saturation = 0.0 in [[preprocess]] #1 (color_jitter)",
        ),
        (
            {"saturation": 0.3, "hue": 0.1},
            "color_jitter's saturation and hue need colour, but the batch reaching it is grayscale",
            "saturation = 0.0 and hue = 0.0 in [[preprocess]] #1 (color_jitter)",
        ),
    ],
)
def test_color_jitter_refuses_saturation_and_hue_on_gray_with_the_fix(params, message, fix):
    fault = refusal(Preprocess((make_stage("color_jitter", brightness=0.1, **params),)), GRAY)
    assert fault.code == "shape.channels"
    assert fault.stage == "preprocess[0] color_jitter"
    assert fault.message == message
    assert fault.got == "float32 b 16 16 1 in [0, 1]"
    assert fault.hint == (
        f'{fix}, or add [[preprocess]] op = "to_rgb" before [[preprocess]] #1 (color_jitter)'
    )


def test_color_jitter_refuses_gray_while_tracing_too():
    stage = make_stage("color_jitter", hue=0.1)
    with pytest.raises(ContractError) as info:
        jax.jit(lambda x, k: stage(x, k)).trace(
            jax.ShapeDtypeStruct((2, 8, 8, 1), jnp.float32), KEY
        )
    assert info.value.diagnostic.code == "shape.channels"
    assert info.value.diagnostic.hint.startswith("hue = 0.0 in this stage")


def test_color_jitter_refuses_pixels_outside_0_1_with_the_normalize_that_scales_them():
    pre = Preprocess((make_stage("color_jitter", brightness=0.1),))
    fault = refusal(pre, ImageSpec(16, 16, 3, "float32", (0.0, 255.0)))
    assert fault.code == "range.input"
    assert fault.message == (
        "color_jitter works on pixels in [0, 1], but values in [0, 255] reach it"
    )
    assert fault.hint == (
        'add [[preprocess]] op = "normalize" mean = [0.0, 0.0, 0.0] std = [255.0, 255.0, 255.0] '
        "before [[preprocess]] #1 (color_jitter)"
    )


@pytest.mark.parametrize(
    ("toml", "hint"),
    [
        ("hue = 0.6", "hue = 0.0 in [[preprocess]] #1 (color_jitter) (the default)"),
        ("brightness = -0.1", "brightness = 0.0 in [[preprocess]] #1 (color_jitter) (the default)"),
        ("contrast = 2.0", "contrast = 0.0 in [[preprocess]] #1 (color_jitter) (the default)"),
        ("saturation = true", "saturation = 0.0 in [[preprocess]] #1 (color_jitter) (the default)"),
    ],
)
def test_color_jitter_bad_values_are_config_values_with_the_fix(toml, hint):
    assert only_fault(f'op = "color_jitter"\n{toml}').hint == hint


def test_color_jitter_built_in_code_is_bounded_too():
    with pytest.raises(ConfigError) as info:
        make_stage("color_jitter", hue=0.7)
    fault = info.value.diagnostic
    assert fault.code == "config.value"
    assert fault.message == "color_jitter: hue must be a number in [0, 0.5]"
    assert fault.hint == "hue = 0.0 in this stage (the default)"


# --- rand_augment ------------------------------------------------------------------------------


def test_rand_augment_output_is_what_in_spec_says(run):
    stage = make_stage("rand_augment", num_ops=2, magnitude=9)
    images = pixels((2, 8, 8, 3))
    out = augment(stage, images, KEY, run)
    spec = stage.in_spec(ImageSpec(8, 8, 3, "float32", (0.0, 1.0)))
    assert out.shape == (2, *spec.shape) and out.dtype == jnp.float32
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert differ(out, images)


def test_rand_augment_is_keyed_and_per_image():
    stage = make_stage("rand_augment", num_ops=2, magnitude=15)
    augmented = jax.jit(lambda x, k: stage(x, k))
    same = jnp.broadcast_to(pixels((1, 8, 8, 3), low=0.2, high=0.8), (8, 8, 8, 3))
    first = augmented(same, KEY)
    np.testing.assert_array_equal(first, augmented(same, KEY))
    assert differ(first, augmented(same, OTHER_KEY))
    assert len({np.asarray(image).tobytes() for image in first}) > 4


def test_rand_augment_of_no_ops_is_the_identity():
    images = pixels((2, 8, 8, 3))
    np.testing.assert_array_equal(make_stage("rand_augment", num_ops=0)(images, KEY), images)


def test_every_op_of_the_table_is_its_own_op():
    """Each of the 14 ops on one image at magnitude 9: identity leaves it, every other op
    changes it, each otherwise than the others, and all stay in [0, 1]. (24x24: equalize
    leaves a channel of fewer than 256 pixels as it is, as PIL does.)"""
    image = pixels((1, 24, 24, 3), low=0.2, high=0.8)[0]
    ops = jnp.arange(len(RAND_AUGMENT_OPS))
    each = jax.jit(jax.vmap(lambda op: _apply(image, op, jnp.float32(1.0), 0.3)))
    out = np.asarray(each(ops))
    assert RAND_AUGMENT_OPS[0] == "identity"
    np.testing.assert_array_equal(out[0], image)
    for name, result in zip(RAND_AUGMENT_OPS[1:], out[1:], strict=True):
        assert differ(result, image), name
    assert len({result.round(5).tobytes() for result in out}) == len(RAND_AUGMENT_OPS)
    assert out.min() >= 0.0 and out.max() <= 1.0


def test_pixel_ops_agree_with_torchvision():
    """The ops torchvision's RandAugment has in the same form, on the same image."""
    torch = pytest.importorskip("torch")
    tvf = pytest.importorskip("torchvision.transforms.v2.functional")
    levels = np.random.default_rng(0).integers(50, 200, (24, 24, 3)).astype(np.float32)
    image = jnp.asarray(levels / 255.0)
    tensor = torch.from_numpy(levels / 255.0).permute(2, 0, 1)
    level = 0.3  # magnitude 9
    index = {name: i for i, name in enumerate(RAND_AUGMENT_OPS)}
    expected = {
        "solarize": tvf.solarize(tensor, 1.0 - level),
        "posterize": tvf.posterize(tensor, 7),
        "brightness": tvf.adjust_brightness(tensor, 1.27),
        "color": tvf.adjust_saturation(tensor, 1.27),
        "sharpness": tvf.adjust_sharpness(tensor, 1.27),
        "auto_contrast": tvf.autocontrast(tensor),
        "equalize": tvf.equalize((tensor * 255).round().to(torch.uint8)).float() / 255,
    }
    ours = jax.jit(jax.vmap(lambda op: _apply(image, op, jnp.float32(1.0), level)))(
        jnp.asarray([index[name] for name in expected])
    )
    for name, result in zip(expected, np.asarray(ours), strict=True):
        np.testing.assert_allclose(
            result, expected[name].permute(1, 2, 0).numpy(), atol=2e-3, err_msg=name
        )


def test_equalize_matches_pil():
    from PIL import Image, ImageOps

    levels = np.random.default_rng(1).integers(40, 120, (32, 32)).astype(np.uint8)
    expected = np.asarray(ImageOps.equalize(Image.fromarray(levels)))
    assert (expected != levels).any()  # enough pixels that PIL equalizes at all
    ours = np.asarray(_equalize_plane(jnp.asarray(levels / 255.0, jnp.float32))) * 255
    np.testing.assert_array_equal(ours.round(), expected)


def test_rand_augment_takes_gray_and_refuses_other_channel_counts():
    stage = make_stage("rand_augment")
    assert stage.in_spec(GRAY) == GRAY
    fault = refusal(Preprocess((stage,)), ImageSpec(16, 16, 4, "float32", (0.0, 1.0)))
    assert fault.code == "shape.channels"
    assert fault.message == "rand_augment takes grayscale or RGB images, not 4 channels"
    assert fault.hint == 'mode = "rgb" under [data] (decodes RGBA files as RGB)'


@pytest.mark.parametrize(
    ("toml", "hint"),
    [
        ("magnitude = 31", "magnitude = 9 in [[preprocess]] #1 (rand_augment) (the default)"),
        ("magnitude = -1", "magnitude = 9 in [[preprocess]] #1 (rand_augment) (the default)"),
        ("num_ops = 2.5", "num_ops = 2 in [[preprocess]] #1 (rand_augment) (the default)"),
        ("num_ops = 17", "num_ops = 2 in [[preprocess]] #1 (rand_augment) (the default)"),
    ],
)
def test_rand_augment_bad_values_are_config_values_with_the_fix(toml, hint):
    assert only_fault(f'op = "rand_augment"\n{toml}').hint == hint


def test_rand_augment_built_in_code_is_bounded_too():
    with pytest.raises(ConfigError) as info:
        make_stage("rand_augment", magnitude=40)
    assert info.value.diagnostic.message == "rand_augment: magnitude must be an int in [0, 30]"
    with pytest.raises(ConfigError) as info:
        make_stage("rand_augment", num_ops=1.5)
    assert info.value.diagnostic.hint == "num_ops = 2 in this stage (the default)"


# --- random_erasing ----------------------------------------------------------------------------


def erased(out) -> np.ndarray:
    """Which pixels of an all-ones batch were erased (set to 0)."""
    return (np.asarray(out) == 0).all(axis=-1)


def test_random_erasing_of_probability_0_is_the_identity_and_of_1_erases_every_image(run):
    images = jnp.ones((16, 16, 16, 3))
    never = make_stage("random_erasing", probability=0.0)
    np.testing.assert_array_equal(augment(never, images, KEY, run), images)
    always = augment(make_stage("random_erasing", probability=1.0), images, KEY, run)
    assert always.shape == images.shape and always.dtype == images.dtype
    assert erased(always).any(axis=(1, 2)).all()


def test_random_erasing_blanks_one_rectangle_of_the_asked_area():
    out = make_stage("random_erasing", probability=1.0)(jnp.ones((64, 32, 32, 3)), KEY)
    for mask in erased(out):
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        box = mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
        assert box.all()  # one solid rectangle: its bounding box is all erased
        assert 0.02 - 0.01 <= mask.mean() <= 0.33 + 0.01
        assert box.shape[0] < 32 and box.shape[1] < 32


def test_random_erasing_is_keyed_per_image_and_follows_the_probability():
    stage = make_stage("random_erasing", probability=0.5)
    images = jnp.ones((200, 8, 8, 1))
    first = stage(images, KEY)
    np.testing.assert_array_equal(first, stage(images, KEY))
    assert differ(first, stage(images, OTHER_KEY))
    share = erased(first).any(axis=(1, 2)).mean()
    assert 0.35 < share < 0.65


def test_random_erasing_with_noise_states_its_range():
    stage = make_stage("random_erasing", probability=1.0, value="normal")
    out = np.asarray(stage(jnp.full((8, 16, 16, 3), 0.5), KEY))
    assert out.min() >= -3.0 and out.max() <= 3.0 and out.min() < 0.0
    assert stage.in_spec(RGB).value_range == (-3.0, 3.0)
    spec = ImageSpec(16, 16, 3, "float32", (-2.0, 2.5))
    assert make_stage("random_erasing").in_spec(spec).value_range == (-2.0, 2.5)


def test_random_erasing_with_zeros_keeps_integer_pixels_and_noise_refuses_them():
    images = jnp.full((4, 8, 8, 3), 200, jnp.uint8)
    out = make_stage("random_erasing", probability=1.0)(images, KEY)
    assert out.dtype == jnp.uint8 and erased(out).any()
    pre = Preprocess((make_stage("random_erasing", value="normal"),))
    assert refusal(pre, ImageSpec(8, 8, 3, "uint8", (0.0, 255.0))).code == "dtype.input"


@pytest.mark.parametrize(
    ("toml", "hint"),
    [
        (
            "probability = 1.5",
            "probability = 0.5 in [[preprocess]] #1 (random_erasing) (the default)",
        ),
        (
            "scale = [0.5, 0.1]",
            "scale = [0.02, 0.33] in [[preprocess]] #1 (random_erasing) (the default)",
        ),
        (
            "ratio = [3.0, 0.3]",
            "ratio = [0.3, 3.3] in [[preprocess]] #1 (random_erasing) (the default)",
        ),
        ('value = "Normal"', 'value = "normal" in [[preprocess]] #1 (random_erasing)'),
    ],
)
def test_random_erasing_bad_values_are_config_values_with_the_fix(toml, hint):
    assert only_fault(f'op = "random_erasing"\n{toml}').hint == hint


# --- normalize preset --------------------------------------------------------------------------


def test_normalize_preset_is_imagenet_statistics_and_knows_its_range(run):
    stage = make_stage("normalize", preset="imagenet")
    mean, std = NORMALIZE_PRESETS["imagenet"]
    assert (stage.mean, stage.std) == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)) == (mean, std)
    images = pixels()
    out = run(stage, images)
    np.testing.assert_allclose(out, (np.asarray(images) - mean) / np.asarray(std), atol=1e-6)
    lo, hi = stage.in_spec(RGB).value_range
    assert lo == pytest.approx(-0.485 / 0.229) and hi == pytest.approx((1 - 0.406) / 0.225)


def test_normalize_preset_beside_mean_or_std_is_a_config_value_with_the_fix():
    fault = only_fault('op = "normalize"\npreset = "imagenet"\nmean = [0.5, 0.5, 0.5]')
    assert (
        fault.message == "normalize: preset = 'imagenet' sets mean and std, but mean is given too"
    )
    assert fault.got == "mean = [0.5, 0.5, 0.5]"
    place = "[[preprocess]] #1 (normalize)"
    assert fault.hint == (
        f"remove mean from {place} (the preset sets mean and std), or remove preset from {place}"
    )
    both = only_fault('op = "normalize"\npreset = "imagenet"\nmean = [0.4]\nstd = [0.2]')
    assert both.hint.startswith(f"remove mean from {place} and remove std from {place}")


def test_normalize_preset_round_trips_through_the_resolved_config():
    """A run folder's config.toml writes the preset with its mean and std: it loads again."""
    config = parse_config(
        '[[preprocess]]\nop = "to_float"\n[[preprocess]]\nop = "normalize"\npreset = "imagenet"\n'
    )
    again = parse_config(config.to_toml())
    assert again.preprocess == config.preprocess


def test_an_unknown_preset_gets_the_closest_one():
    assert only_fault('op = "normalize"\npreset = "ImageNet"').hint == (
        'preset = "imagenet" in [[preprocess]] #1 (normalize)'
    )


def test_normalize_preset_refuses_gray_with_the_fix():
    fault = refusal(Preprocess((make_stage("normalize", preset="imagenet"),)), GRAY)
    assert fault.code == "shape.channels"
    assert fault.message == (
        "normalize's preset 'imagenet' holds RGB statistics, but the batch reaching it has "
        "1 channel(s)"
    )
    place = "[[preprocess]] #1 (normalize)"
    assert fault.hint == (
        f"remove preset from {place} and mean = [0.449] and std = [0.226] in {place}, "
        f'or add [[preprocess]] op = "to_rgb" before {place}'
    )


def test_normalize_preset_refuses_pixels_outside_0_1():
    pre = Preprocess((make_stage("normalize", preset="imagenet"),))
    fault = refusal(pre, ImageSpec(16, 16, 3, "float32", (0.0, 255.0)))
    assert fault.code == "range.input"
    assert fault.message.startswith("normalize's preset 'imagenet' works on pixels in [0, 1]")


# --- the recipe, end to end --------------------------------------------------------------------


RECIPE = """
name = "recipe"
[data]
source = "npz"
path = "{path}"
val_fraction = 0.25
test_fraction = 0.25
[[preprocess]]
op = "to_float"
[[preprocess]]
op = "random_resized_crop"
height = 32
width = 32
[[preprocess]]
op = "color_jitter"
brightness = 0.4
contrast = 0.4
saturation = 0.4
hue = 0.1
[[preprocess]]
op = "rand_augment"
num_ops = 2
magnitude = 9
[[preprocess]]
op = "normalize"
preset = "imagenet"
[[preprocess]]
op = "random_erasing"
probability = 0.25
[model]
name = "sequential"
input = [32, 32, 3]
input_range = [{lo}, {hi}]
num_classes = 2
layers = [{{type = "conv", features = 4, kernel = 3}}, {{type = "gap"}},
          {{type = "dense", features = 2}}]
[train]
batch_size = 8
epochs = 1
"""


@pytest.fixture
def recipe(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (32, 32, 32, 3), dtype=np.uint8)
    path = tmp_path / "data.npz"
    np.savez(path, images=images, labels=np.arange(32) % 2)

    def write(lo=-2.2, hi=2.7):
        config = tmp_path / "recipe.toml"
        config.write_text(RECIPE.format(path=path, lo=lo, hi=hi))
        return config

    return write


def test_the_recipe_passes_check_and_trains_one_step(recipe):
    from typedpipe import make_train
    from typedpipe.pipeline.config import load_draft
    from typedpipe.pipeline.sources.loader import Batch

    draft = load_draft(recipe())
    assert not errors(check_draft(draft)), [str(d) for d in check_draft(draft)]
    config = draft.config
    train = make_train(config, "int", steps_per_epoch=1)
    state = jax.jit(train.init_state)(KEY)
    images = np.random.default_rng(1).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    batch = Batch(jnp.asarray(images), jnp.arange(8, dtype=jnp.int32) % 2, jnp.ones(8, bool))
    step = jax.jit(train.train_step)
    after, metrics = step(state, batch, KEY)
    assert int(after.step) == 1 and bool(metrics["finite"])
    # Exact resume: the step's draws come from (key, step) alone.
    again, _ = step(state, batch, KEY)
    np.testing.assert_array_equal(
        jax.tree.leaves(after.params)[0], jax.tree.leaves(again.params)[0]
    )
    evaluated = jax.jit(train.eval_step)(after, batch)
    assert evaluated["predictions"].shape == (8,)


def test_the_recipe_range_reaches_checks_model_input(recipe):
    """normalize's preset states ImageNet's range: a model built for [0, 1] is refused."""
    from typedpipe.pipeline.config import load_draft

    found = [d for d in check_draft(load_draft(recipe(0.0, 1.0))) if d.code == "range.input"]
    assert found and found[0].stage == "model"
    assert "values in [-2.1179, 2.64]" in found[0].message


def test_a_crop_of_the_wrong_size_is_fixed_at_the_crop(recipe, tmp_path):
    """check's spatial fix resizes the crop itself, not a resize appended after it."""
    from typedpipe.pipeline.config import load_draft

    path = recipe()
    path.write_text(path.read_text().replace("height = 32\nwidth = 32", "height = 24\nwidth = 24"))
    (fault,) = [d for d in check_draft(load_draft(path)) if d.code == "shape.spatial"]
    assert fault.stage == "model"
    assert fault.hint.startswith(
        "height = 32 and width = 32 in [[preprocess]] #2 (random_resized_crop)"
    )
