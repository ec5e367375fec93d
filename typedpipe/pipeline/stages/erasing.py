"""Random erasing: one rectangle per image blanked out, as torchvision's RandomErasing."""

import dataclasses
from typing import ClassVar, Literal

import jax
import jax.numpy as jnp
from jaxtyping import Array, PRNGKeyArray, Shaped

from typedpipe.contracts import ImageSpec, contract
from typedpipe.pipeline.stages.base import (
    Pair,
    Stage,
    Unit,
    require_pair,
    require_range,
    spec_of_batch,
)
from typedpipe.pipeline.stages.boxes import sample_boxes

#: How far `value = "normal"` draws may go either way: timm's per-pixel N(0, 1) noise,
#: cut at 3 standard deviations so that the stage can state the range it hands on.
NOISE_BOUND = 3.0


@dataclasses.dataclass(frozen=True)
class RandomErasing(Stage):
    """With `probability`, blank one rectangle of each image: its area a share in `scale`
    of the image's, its width / height in `ratio` (log-uniform), placed uniformly.

    The rectangle is drawn as torchvision draws it (10 tries for one smaller than the
    image; an image where none fits is left as it is) and filled with zeros
    (`value = "zeros"`, torchvision's default) or per-pixel N(0, 1) noise cut to
    [-3, 3] (`value = "normal"`, timm's "pixel" mode, meant for normalized images).
    Zeros keep integer pixels integer; noise needs floats.

    Example:
        >>> stage = RandomErasing(probability=1.0)
        >>> out = stage(jnp.ones((2, 16, 16, 3)), jax.random.key(0))
        >>> bool((out == 0).any(axis=(1, 2, 3)).all())
        True
    """

    op: ClassVar[str] = "random_erasing"
    augmentation: ClassVar[bool] = True
    probability: Unit = 0.5
    scale: Pair = (0.02, 0.33)
    ratio: Pair = (0.3, 3.3)
    value: Literal["zeros", "normal"] = "zeros"

    def __post_init__(self):
        for key in ("scale", "ratio"):  # a list from code, as from TOML
            if isinstance(getattr(self, key), list):
                object.__setattr__(self, key, tuple(getattr(self, key)))
        require_range(self, "probability", 0.0, 1.0)
        require_pair(self, "scale", 0.0, 1.0, open_low=True)
        require_pair(self, "ratio", 0.01, 100.0)

    @property
    def _fill_range(self) -> tuple[float, float]:
        return (-NOISE_BOUND, NOISE_BOUND) if self.value == "normal" else (0.0, 0.0)

    def in_spec(self, spec: ImageSpec) -> ImageSpec:
        self._require(spec, dtype="float" if self.value == "normal" else "any")
        if spec.value_range is None or not self.probability:
            return spec
        (lo, hi), (fill_lo, fill_hi) = spec.value_range, self._fill_range
        return dataclasses.replace(spec, value_range=(min(lo, fill_lo), max(hi, fill_hi)))

    @contract
    def __call__(  # type: ignore[override]  # an augmentation requires the key
        self, images: Shaped[Array, "b h w c"], key: PRNGKeyArray
    ) -> Shaped[Array, "b h w c"]:
        self.in_spec(spec_of_batch(images))
        if not self.probability:
            return images
        batch, height, width, _ = images.shape
        erase_key, box_key, noise_key = jax.random.split(key, 3)
        # torchvision's boxes are strictly smaller than the image.
        within = (height - 1, width - 1)
        boxes = sample_boxes(
            key=box_key,
            batch=batch,
            image=(height, width),
            scale=self.scale,
            ratio=self.ratio,
            within=within,
        )
        erase = jax.random.bernoulli(erase_key, self.probability, (batch,)) & boxes.found

        def per_image(values: Array) -> Array:
            return values[:, None, None, None]

        rows = jnp.arange(height)[None, :, None, None]
        cols = jnp.arange(width)[None, None, :, None]
        top, left = per_image(boxes.top), per_image(boxes.left)
        inside = (
            (rows >= top)
            & (rows < top + per_image(boxes.height))
            & (cols >= left)
            & (cols < left + per_image(boxes.width))
            & per_image(erase)
        )
        if self.value == "normal":
            noise = jax.random.normal(noise_key, images.shape, images.dtype)
            fill = jnp.clip(noise, -NOISE_BOUND, NOISE_BOUND)
        else:
            fill = jnp.zeros_like(images)
        return jnp.where(inside, fill, images)
