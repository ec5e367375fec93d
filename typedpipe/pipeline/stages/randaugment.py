"""RandAugment: `num_ops` ops per image, each drawn from a fixed table, at one `magnitude`.

The table is torchvision's (and timm's rand-m9 without its extras), in this
order (`RAND_AUGMENT_OPS`); at magnitude `m` of 30 (torchvision's 31 bins) an op
goes `m / 30` of the way to its strongest setting, with a random sign where it
has a direction:

    identity
    auto_contrast   each channel stretched onto [0, 1]
    equalize        each channel's histogram equalized (256 levels, as PIL does)
    rotate          up to 30 degrees about the center (dm-pix's rotate matrix)
    solarize        values at or above 1 - m/30 inverted (dm-pix's solarize)
    color           blended by 1 +- 0.9 m/30 with dm-pix's gray image (identity on gray)
    posterize       8 - round(4 m/30) bits kept
    contrast        1 +- 0.9 m/30 about each channel's mean (dm-pix's adjust_contrast)
    brightness      scaled by 1 +- 0.9 m/30
    sharpness       blended by 1 +- 0.9 m/30 with PIL's 3x3 smoothing
    shear_x/_y      up to 0.3
    translate_x/_y  up to 150/331 of the side

The geometric ops are one affine warp each (`WARPS`), resampled bilinearly
with `jax.scipy.ndimage.map_coordinates` and filled with 0 (torchvision: nearest,
0); the others are pixel ops (`PIXEL_OPS`). A drawn op is one warp (the identity
for a pixel op) and one pixel op (the identity for a warp), each chosen by a
`lax.switch`, so every image draws its own ops with no Python loop over the
batch (under `vmap` every branch is computed and one selected: the price of
drawing per image in one program), and the drawn ops run in a `lax.scan`, so the
table is compiled once whatever `num_ops`. The randomness comes from the stage's
key alone, so a resumed run draws what the uninterrupted one did.
"""

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import Annotated, ClassVar

import jax
import jax.numpy as jnp
from beartype.vale import Is
from jaxtyping import Array, Float, PRNGKeyArray

from typedpipe.contracts import ImageSpec, contract
from typedpipe.pipeline.stages.base import Stage, require_range, spec_of_batch

#: The strongest magnitude: torchvision's `num_magnitude_bins = 31` counts 0..30.
MAX_MAGNITUDE = 30
Magnitude = Annotated[int, Is[lambda m: 0 <= m <= MAX_MAGNITUDE], "an int in [0, 30]"]
NumOps = Annotated[int, Is[lambda n: 0 <= n <= 16], "an int in [0, 16]"]

# One image (h w c, float32 in [0, 1]), the strength (magnitude / 30) and a sign (+-1).
Op = Callable[[Array, float, Array], Array]


def _identity(image: Array, level: float, sign: Array) -> Array:
    return image


def _auto_contrast(image: Array, level: float, sign: Array) -> Array:
    low = image.min(axis=(0, 1), keepdims=True)
    span = image.max(axis=(0, 1), keepdims=True) - low
    return jnp.where(span > 0, (image - low) / jnp.where(span > 0, span, 1.0), image)


def _equalize_plane(plane: Array) -> Array:
    """PIL's equalize of one channel on 256 levels; a channel of one level is kept."""
    levels = jnp.clip(jnp.round(plane * 255.0), 0, 255).astype(jnp.int32)
    histogram = jnp.zeros(256, jnp.int32).at[levels.ravel()].add(1)
    last = 255 - jnp.argmax(histogram[::-1] > 0)  # the brightest level present
    step = (levels.size - histogram[last]) // 255
    lut = (jnp.cumsum(histogram) + step // 2) // jnp.maximum(step, 1)
    lut = jnp.clip(jnp.concatenate([jnp.zeros(1, jnp.int32), lut[:-1]]), 0, 255)
    return jnp.where(step > 0, lut[levels].astype(jnp.float32) / 255.0, plane)


def _equalize(image: Array, level: float, sign: Array) -> Array:
    return jax.vmap(_equalize_plane, in_axes=2, out_axes=2)(image)


def _solarize(image: Array, level: float, sign: Array) -> Array:
    import dm_pix as pix

    return pix.solarize(image, 1.0 - level)


def _factor(level: float, sign: Array) -> Array:
    return 1.0 + 0.9 * level * sign


def _color(image: Array, level: float, sign: Array) -> Array:
    import dm_pix as pix

    if image.shape[-1] == 1:  # a gray image has no colour to blend
        return image
    gray = pix.rgb_to_grayscale(image, keep_dims=True)
    return gray + _factor(level, sign) * (image - gray)


def _posterize(image: Array, level: float, sign: Array) -> Array:
    levels = 2.0 ** (8 - round(4 * level))
    return jnp.clip(jnp.floor(image * levels), 0.0, levels - 1) / levels


def _contrast(image: Array, level: float, sign: Array) -> Array:
    import dm_pix as pix

    return pix.adjust_contrast(image, _factor(level, sign))


def _brightness(image: Array, level: float, sign: Array) -> Array:
    return image * _factor(level, sign)


def _sharpness(image: Array, level: float, sign: Array) -> Array:
    """Blend with PIL's smoothing filter; the border pixels, which it leaves, stay."""
    height, width, channels = image.shape
    if height < 3 or width < 3:
        return image
    kernel = jnp.asarray([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]]) / 13.0
    kernel = jnp.broadcast_to(kernel[:, :, None, None], (3, 3, 1, channels))
    smooth = jax.lax.conv_general_dilated(
        image[None],
        kernel,
        (1, 1),
        "VALID",
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=channels,
    )[0]
    border = ((1, 1), (1, 1), (0, 0))
    inside = jnp.pad(jnp.ones((height - 2, width - 2, 1), bool), border)
    degenerate = jnp.where(inside, jnp.pad(smooth, border), image)
    return degenerate + _factor(level, sign) * (image - degenerate)


# The geometric ops as the pull-back map of an affine warp: input = matrix @ output +
# offset, in (row, column, channel) coordinates, for an image of (height, width, channels).
Warp = Callable[[tuple[int, ...], float, Array], tuple[Array, Array]]


def _affine(
    block: tuple[Array | float, Array | float, Array | float, Array | float],
    shift: tuple[Array | float, Array | float],
) -> tuple[Array, Array]:
    """The warp of a 2x2 `block` on (row, column) and a `shift`, channels untouched.
    Stacked, not scattered into an identity: a batched scatter costs XLA seconds to compile."""
    a, b, c, d = (jnp.asarray(v, jnp.float32) for v in block)
    zero, one = jnp.zeros((), jnp.float32), jnp.ones((), jnp.float32)
    matrix = jnp.stack(
        [jnp.stack([a, b, zero]), jnp.stack([c, d, zero]), jnp.stack([zero, zero, one])]
    )
    row, col = (jnp.asarray(v, jnp.float32) for v in shift)
    return matrix, jnp.stack([row, col, zero])


def _no_warp(shape: tuple[int, ...], level: float, sign: Array) -> tuple[Array, Array]:
    return _affine((1.0, 0.0, 0.0, 1.0), (0.0, 0.0))


def _rotate(shape: tuple[int, ...], level: float, sign: Array) -> tuple[Array, Array]:
    """About the image's center, as dm-pix's rotate (whose matrix this is)."""
    angle = sign * math.radians(30.0) * level
    cos, sin = jnp.cos(angle), jnp.sin(angle)
    center_row, center_col = (shape[0] - 1) / 2.0, (shape[1] - 1) / 2.0
    # offset = center - matrix @ center, so that the center stays where it is
    shift = (
        center_row - (cos * center_row + sin * center_col),
        center_col - (cos * center_col - sin * center_row),
    )
    return _affine((cos, sin, -sin, cos), shift)


def _shear_x(shape: tuple[int, ...], level: float, sign: Array) -> tuple[Array, Array]:
    """Each row shifted sideways in proportion to its height, by up to 0.3 of it."""
    return _affine((1.0, 0.0, 0.3 * level * sign, 1.0), (0.0, 0.0))


def _shear_y(shape: tuple[int, ...], level: float, sign: Array) -> tuple[Array, Array]:
    return _affine((1.0, 0.3 * level * sign, 0.0, 1.0), (0.0, 0.0))


def _translate_x(shape: tuple[int, ...], level: float, sign: Array) -> tuple[Array, Array]:
    """Shifted by up to 150/331 of the width (torchvision's 150 pixels of 331)."""
    return _affine((1.0, 0.0, 0.0, 1.0), (0.0, sign * (150.0 / 331.0) * shape[1] * level))


def _translate_y(shape: tuple[int, ...], level: float, sign: Array) -> tuple[Array, Array]:
    return _affine((1.0, 0.0, 0.0, 1.0), (sign * (150.0 / 331.0) * shape[0] * level, 0.0))


def _warp(image: Array, matrix: Array, offset: Array) -> Array:
    """The pull-back warp, bilinear, filled with 0 (an identity warp is exact).

    `jax.scipy.ndimage.map_coordinates` per channel, in 2-D: dm-pix's
    `affine_transform` interpolates in 3-D (the channel axis too, 8 corners instead
    of 4), and in the batched switch XLA took 10x as long to compile it.
    """
    height, width, _ = image.shape
    rows, cols = jnp.meshgrid(
        jnp.arange(height, dtype=jnp.float32), jnp.arange(width, dtype=jnp.float32), indexing="ij"
    )
    at_row = matrix[0, 0] * rows + matrix[0, 1] * cols + offset[0]
    at_col = matrix[1, 0] * rows + matrix[1, 1] * cols + offset[1]

    def plane(values: Array) -> Array:
        return jax.scipy.ndimage.map_coordinates(
            values, [at_row, at_col], order=1, mode="constant", cval=0.0
        )

    return jax.vmap(plane, in_axes=2, out_axes=2)(image)


#: The pixel ops, by name.
PIXEL_OPS: dict[str, Op] = {
    "identity": _identity,
    "auto_contrast": _auto_contrast,
    "equalize": _equalize,
    "solarize": _solarize,
    "color": _color,
    "posterize": _posterize,
    "contrast": _contrast,
    "brightness": _brightness,
    "sharpness": _sharpness,
}
#: The geometric ops, by name: each an affine warp.
WARPS: dict[str, Warp] = {
    "rotate": _rotate,
    "shear_x": _shear_x,
    "shear_y": _shear_y,
    "translate_x": _translate_x,
    "translate_y": _translate_y,
}
#: The op table, in the order an op is drawn from it (each with probability 1/14).
RAND_AUGMENT_OPS = (
    "identity",
    "auto_contrast",
    "equalize",
    "rotate",
    "solarize",
    "color",
    "posterize",
    "contrast",
    "brightness",
    "sharpness",
    "shear_x",
    "shear_y",
    "translate_x",
    "translate_y",
)
# For each op of the table: its branch among the warps (0: no warp) and among the pixel
# ops (0: identity). One image's op is one warp (all geometric ops share it) and one
# pixel op, so the program holds one warp per drawn op, not five.
_WARP_BRANCH = tuple(1 + list(WARPS).index(n) if n in WARPS else 0 for n in RAND_AUGMENT_OPS)
_PIXEL_BRANCH = tuple(list(PIXEL_OPS).index(n) if n in PIXEL_OPS else 0 for n in RAND_AUGMENT_OPS)


def _apply(image: Array, op: Array, sign: Array, level: float) -> Array:
    """Op number `op` of the table on one image (h w c, float32 in [0, 1])."""
    shape = image.shape
    warps = [functools.partial(w, shape, level) for w in (_no_warp, *WARPS.values())]
    # The barrier keeps XLA from fusing the matrix into the warp's gathers, which
    # multiplies its compile time.
    warp = jax.lax.optimization_barrier(jax.lax.switch(jnp.asarray(_WARP_BRANCH)[op], warps, sign))
    image = _warp(image, *warp)
    pixel_ops = [functools.partial(_at_level, p, level) for p in PIXEL_OPS.values()]
    image = jax.lax.switch(jnp.asarray(_PIXEL_BRANCH)[op], pixel_ops, image, sign)
    return jnp.clip(image, 0.0, 1.0)


@dataclasses.dataclass(frozen=True)
class RandAugment(Stage):
    """`num_ops` ops per image, each drawn uniformly from `RAND_AUGMENT_OPS` with its own
    sign, at `magnitude` of 30 (see the module for the table); clipped to [0, 1].

    Example:
        >>> stage = RandAugment(num_ops=2, magnitude=9)
        >>> stage(jnp.full((2, 8, 8, 3), 0.5), jax.random.key(0)).shape
        (2, 8, 8, 3)
    """

    op: ClassVar[str] = "rand_augment"
    augmentation: ClassVar[bool] = True
    num_ops: NumOps = 2
    magnitude: Magnitude = 9

    def __post_init__(self):
        require_range(self, "num_ops", 0, 16, integer=True)
        require_range(self, "magnitude", 0, MAX_MAGNITUDE, integer=True)

    def in_spec(self, spec: ImageSpec) -> ImageSpec:
        self._require(spec, dtype="float")
        return self._require_gray_or_rgb_pixels(spec)

    @contract
    def __call__(  # type: ignore[override]  # an augmentation requires the key
        self, images: Float[Array, "b h w c"], key: PRNGKeyArray
    ) -> Float[Array, "b h w c"]:
        self.in_spec(spec_of_batch(images))
        if not self.num_ops:
            return images
        dtype, batch = images.dtype, images.shape[0]
        op_key, sign_key = jax.random.split(key)
        draws = (batch, self.num_ops)
        chosen = jax.random.randint(op_key, draws, 0, len(RAND_AUGMENT_OPS))
        signs = jnp.where(jax.random.bernoulli(sign_key, 0.5, draws), 1.0, -1.0)
        level = self.magnitude / MAX_MAGNITUDE

        def augment(image: Array, ops: Array, op_signs: Array) -> Array:
            # A scan over the drawn ops: the table is compiled once, not once per op.
            def one(image, drawn):
                return _apply(image, *drawn, level=level), None

            return jax.lax.scan(one, image, (ops, op_signs))[0]

        # Work in float32: a bfloat16 batch would meet dm-pix's float32 constants.
        out = jax.vmap(augment)(images.astype(jnp.float32), chosen, signs.astype(jnp.float32))
        return out.astype(dtype)


def _at_level(op: Op, level: float, image: Array, sign: Array) -> Array:
    return op(image, level, sign)
