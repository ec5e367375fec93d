"""Colour jitter: random brightness, contrast, saturation and hue per image, with dm-pix."""

import dataclasses
from typing import Annotated, ClassVar

import jax
import jax.numpy as jnp
from beartype.vale import Is
from jaxtyping import Array, Float, PRNGKeyArray

from typedpipe.contracts import ImageSpec, contract, hints
from typedpipe.pipeline.stages.base import Stage, Unit, require_range, spec_of_batch

#: The largest hue shift, a share of the colour wheel: half of it either way is all of it.
HueShift = Annotated[float, Is[lambda x: 0.0 <= x <= 0.5], "a number in [0, 0.5]"]


@dataclasses.dataclass(frozen=True)
class ColorJitter(Stage):
    """Shift each image's brightness, contrast, saturation and hue by its own random amount.

    Each bound is 0 (off) by default and draws, per image: a brightness delta in
    [-brightness, brightness] added to every pixel (dm-pix's and TensorFlow's
    brightness, additive: torchvision's scales); a contrast factor in
    [1 - contrast, 1 + contrast] about each channel's mean; a saturation factor in
    [1 - saturation, 1 + saturation]; a hue shift in [-hue, hue] of the colour wheel.
    They are applied in that order (torchvision draws a random order), each with
    dm-pix's `adjust_*`, and the result is clipped to [0, 1] after each, as
    torchvision clamps, so that the HSV conversions stay defined. Saturation and hue
    need colour: on grayscale images only brightness and contrast may be set.

    Example:
        >>> stage = ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1)
        >>> stage(jnp.full((2, 8, 8, 3), 0.5), jax.random.key(0)).shape
        (2, 8, 8, 3)
    """

    op: ClassVar[str] = "color_jitter"
    augmentation: ClassVar[bool] = True
    brightness: Unit = 0.0
    contrast: Unit = 0.0
    saturation: Unit = 0.0
    hue: HueShift = 0.0

    def __post_init__(self):
        for key in ("brightness", "contrast", "saturation"):
            require_range(self, key, 0.0, 1.0)
        require_range(self, "hue", 0.0, 0.5)

    def in_spec(self, spec: ImageSpec) -> ImageSpec:
        self._require(spec, dtype="float")
        colour = {k: 0.0 for k in ("saturation", "hue") if getattr(self, k)}
        if spec.channels == 1 and colour:
            self._fail(
                "shape.channels",
                f"color_jitter's {' and '.join(colour)} {'need' if len(colour) > 1 else 'needs'} "
                "colour, but the batch reaching it is grayscale",
                spec,
                "float b h w 3 (or saturation = 0 and hue = 0 on b h w 1)",
                f"{hints.assign(hints.THIS_STAGE, **colour)}, or add "
                f"{hints.stage_line('to_rgb')} before {hints.THIS_STAGE}",
            )
        return self._require_gray_or_rgb_pixels(spec)

    @contract
    def __call__(  # type: ignore[override]  # an augmentation requires the key
        self, images: Float[Array, "b h w c"], key: PRNGKeyArray
    ) -> Float[Array, "b h w c"]:
        import dm_pix as pix

        self.in_spec(spec_of_batch(images))
        dtype = images.dtype
        # Work in float32: a bfloat16 batch would meet dm-pix's float32 constants.
        images = images.astype(jnp.float32)
        brightness_key, contrast_key, saturation_key, hue_key = jax.random.split(key, 4)
        per_image = (images.shape[0], 1, 1, 1)

        def draw(k, low: float, high: float, shape=per_image) -> Array:
            return jax.random.uniform(k, shape, minval=low, maxval=high)

        def factor(k, bound: float, shape=per_image) -> Array:
            return draw(k, max(0.0, 1.0 - bound), 1.0 + bound, shape)

        # A bound of 0 leaves its op out of the program, so an all-zero jitter is exact.
        if self.brightness:
            delta = draw(brightness_key, -self.brightness, self.brightness)
            images = jnp.clip(pix.adjust_brightness(images, delta), 0.0, 1.0)
        if self.contrast:
            images = jnp.clip(
                pix.adjust_contrast(images, factor(contrast_key, self.contrast)), 0, 1
            )
        # The HSV ops work on planes (b h w): their amounts are per image, (b 1 1).
        planes = per_image[:-1]
        # dm-pix's HSV conversion adds a bool plane to a float one, which strict promotion
        # refuses: its standard promotion is scoped to the call (all operands are float32).
        if self.saturation:
            amount = factor(saturation_key, self.saturation, planes)
            with jax.numpy_dtype_promotion("standard"):
                images = pix.adjust_saturation(images, amount)
            images = jnp.clip(images, 0.0, 1.0)
        if self.hue:
            shift = draw(hue_key, -self.hue, self.hue, planes)
            with jax.numpy_dtype_promotion("standard"):
                images = pix.adjust_hue(images, shift)
            images = jnp.clip(images, 0.0, 1.0)
        return images.astype(dtype)
