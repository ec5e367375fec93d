"""Random resized crop: the ImageNet training crop, and the center crop that stands for it at
inference.

In training each image gets its own window (an area share in `scale`, a
log-uniform aspect ratio in `ratio`, as torchvision's RandomResizedCrop draws
it) resampled to `height` x `width`. Skipping the stage at inference, as other
augmentations are skipped, would hand the model images of the data's size, not
the size it was trained on; so at inference the stage is replaced by its
deterministic counterpart, timm's evaluation transform: the central window of
the output's aspect ratio, `eval_crop` of the shorter side (timm's crop_pct,
0.875), resampled to `height` x `width`. Training and inference hand the model
the same spec, so `check` sees the right one in both, and no resize and
center_crop need be added for evaluation.
"""

import dataclasses
from typing import Annotated, ClassVar

import jax
import jax.numpy as jnp
from beartype.vale import Is
from jaxtyping import Array, Float, PRNGKeyArray

from typedpipe.contracts import ImageSpec, contract
from typedpipe.pipeline.stages.base import (
    Pair,
    Side,
    Stage,
    require_pair,
    require_positive,
    require_range,
    spec_of_batch,
)
from typedpipe.pipeline.stages.boxes import sample_boxes

#: The share of the shorter side the inference crop keeps.
CropFraction = Annotated[float, Is[lambda x: 0.0 < x <= 1.0], "a number in (0, 1]"]

# The widest aspect ratio a config may ask for, either way: past it a crop of a few
# pixels' height would be stretched over the whole output.
_MAX_RATIO = 100.0


def _resample(
    images: Float[Array, "b h w c"],
    window: Float[Array, "b 4"],
    size: tuple[int, int],
) -> Float[Array, "b oh ow c"]:
    """Each image's `window` (top, left, height, width, in pixels) resampled to `size`,
    bilinearly, antialiased when it shrinks: a convex mix, so the value range holds."""
    out_shape = (*size, images.shape[-1])

    def one(image, box):
        top_left, extent = box[:2], box[2:]
        scale = jnp.asarray(size, jnp.float32) / extent
        return jax.image.scale_and_translate(
            image, out_shape, (0, 1), scale, -top_left * scale, method="linear"
        )

    return jax.vmap(one)(images, window)


@dataclasses.dataclass(frozen=True)
class RandomResizedCrop(Stage):
    """A random window per image (area share in `scale`, width / height in `ratio`),
    resampled to `height` x `width`; at inference the central window (see the module).

    Example:
        >>> stage = RandomResizedCrop(16, 16)
        >>> stage(jnp.ones((2, 32, 24, 3)), jax.random.key(0)).shape
        (2, 16, 16, 3)
    """

    op: ClassVar[str] = "random_resized_crop"
    augmentation: ClassVar[bool] = True
    height: Side
    width: Side
    scale: Pair = (0.08, 1.0)
    ratio: Pair = (3.0 / 4.0, 4.0 / 3.0)
    eval_crop: CropFraction = 0.875

    def __post_init__(self):
        for key in ("scale", "ratio"):  # a list from code, as from TOML
            if isinstance(getattr(self, key), list):
                object.__setattr__(self, key, tuple(getattr(self, key)))
        require_positive(self, height=self.height, width=self.width)
        require_pair(self, "scale", 0.0, 1.0, open_low=True)
        require_pair(self, "ratio", 1.0 / _MAX_RATIO, _MAX_RATIO)
        require_range(self, "eval_crop", 0.0, 1.0, open_low=True)

    def in_spec(self, spec: ImageSpec) -> ImageSpec:
        self._require(spec, dtype="float")
        return dataclasses.replace(spec, height=self.height, width=self.width)

    def at_inference(self) -> "CenterResizedCrop":
        return CenterResizedCrop(self.height, self.width, self.eval_crop)

    @contract
    def __call__(  # type: ignore[override]  # an augmentation requires the key
        self, images: Float[Array, "b h w c"], key: PRNGKeyArray
    ) -> Float[Array, "b {self.height} {self.width} c"]:
        self.in_spec(spec_of_batch(images))
        batch, height, width, _ = images.shape
        boxes = sample_boxes(
            key, batch, (height, width), self.scale, self.ratio, within=(height, width)
        )
        # torchvision's fallback where no draw fitted: the whole image, its aspect ratio
        # clamped into `ratio`, centered.
        fallback_h, fallback_w = height, width
        if width / height < self.ratio[0]:
            fallback_h = round(width / self.ratio[0])
        elif width / height > self.ratio[1]:
            fallback_w = round(height * self.ratio[1])
        box_h = jnp.where(boxes.found, boxes.height, fallback_h)
        box_w = jnp.where(boxes.found, boxes.width, fallback_w)
        top = jnp.where(boxes.found, boxes.top, (height - fallback_h) // 2)
        left = jnp.where(boxes.found, boxes.left, (width - fallback_w) // 2)
        window = jnp.stack([top, left, box_h, box_w], axis=1).astype(jnp.float32)
        return _resample(images, window, (self.height, self.width)).astype(images.dtype)


@dataclasses.dataclass(frozen=True)
class CenterResizedCrop(Stage):
    """The central window of the output's aspect ratio, `crop` of the shorter side,
    resampled to `height` x `width`: what a random resized crop is at inference.

    Not a config op of its own: `random_resized_crop` stands in for it, and a
    diagnostic names that stage.
    """

    op: ClassVar[str] = "random_resized_crop"
    height: Side
    width: Side
    crop: CropFraction = 0.875

    @property
    def name(self) -> str:
        return f"{self.op} (at inference)"

    def in_spec(self, spec: ImageSpec) -> ImageSpec:
        self._require(spec, dtype="float")
        return dataclasses.replace(spec, height=self.height, width=self.width)

    @contract
    def __call__(
        self, images: Float[Array, "b h w c"], key=None
    ) -> Float[Array, "b {self.height} {self.width} c"]:
        self.in_spec(spec_of_batch(images))
        batch, height, width, _ = images.shape
        # The largest window of the output's aspect ratio, then `crop` of it.
        fit = min(height / self.height, width / self.width) * self.crop
        box_h, box_w = self.height * fit, self.width * fit
        box = ((height - box_h) / 2, (width - box_w) / 2, box_h, box_w)
        window = jnp.broadcast_to(jnp.asarray(box, jnp.float32), (batch, 4))
        return _resample(images, window, (self.height, self.width)).astype(images.dtype)
