"""Augmentations: random per-image transforms, applied in training only, keyed by the step."""

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
from jaxtyping import Array, PRNGKeyArray, Shaped

from typedpipe.contracts import ImageSpec, contract, hints
from typedpipe.pipeline.stages.base import Padding, Side, Stage, require_positive, spec_of_batch


@dataclasses.dataclass(frozen=True)
class RandomCrop(Stage):
    """Zero-pad by `padding`, then cut a random `height` x `width` window per image."""

    op: ClassVar[str] = "random_crop"
    augmentation: ClassVar[bool] = True
    height: Side
    width: Side
    padding: Padding = 0

    def __post_init__(self):
        require_positive(self, height=self.height, width=self.width, padding=self.padding + 1)

    def in_spec(self, spec: ImageSpec) -> ImageSpec:
        self._require(spec, dtype="any")
        if (
            spec.height + 2 * self.padding < self.height
            or spec.width + 2 * self.padding < self.width
        ):
            self._fail(
                "shape.spatial",
                f"cannot crop {self.height}x{self.width} from "
                f"{spec.height}x{spec.width} padded by {self.padding}",
                spec,
                f"at least b {self.height} {self.width} c",
                hints.assign(hints.THIS_STAGE, padding=self._padding_to_fit(spec)),
            )
        value_range = spec.value_range
        if self.padding and value_range is not None:
            # Zero padding adds the value 0 to the range.
            value_range = (min(value_range[0], 0.0), max(value_range[1], 0.0))
        return dataclasses.replace(
            spec, height=self.height, width=self.width, value_range=value_range
        )

    def _padding_to_fit(self, spec: ImageSpec) -> int:
        """The least padding that lets the crop fit."""
        short = max(self.height - spec.height, self.width - spec.width)
        return -(-short // 2)

    @contract
    def __call__(  # type: ignore[override]  # an augmentation requires the key
        self, images: Shaped[Array, "b h w c"], key: PRNGKeyArray
    ) -> Shaped[Array, "b {self.height} {self.width} c"]:
        self.in_spec(spec_of_batch(images))
        p = self.padding
        padded = jnp.pad(images, ((0, 0), (p, p), (p, p), (0, 0)))
        batch, height, width, channels = padded.shape
        keys = jax.random.split(key, batch)

        def crop(image, image_key):
            top_key, left_key = jax.random.split(image_key)
            top = jax.random.randint(top_key, (), 0, height - self.height + 1)
            left = jax.random.randint(left_key, (), 0, width - self.width + 1)
            return jax.lax.dynamic_slice(image, (top, left, 0), (self.height, self.width, channels))

        return jax.vmap(crop)(padded, keys)


@dataclasses.dataclass(frozen=True)
class RandomFlip(Stage):
    """Mirror each image left-right (and/or top-bottom) with probability 1/2."""

    op: ClassVar[str] = "random_flip"
    augmentation: ClassVar[bool] = True
    horizontal: bool = True
    vertical: bool = False

    def in_spec(self, spec: ImageSpec) -> ImageSpec:
        self._require(spec, dtype="any")
        return spec

    @contract
    def __call__(  # type: ignore[override]  # an augmentation requires the key
        self, images: Shaped[Array, "b h w c"], key: PRNGKeyArray
    ) -> Shaped[Array, "b h w c"]:
        h_key, v_key = jax.random.split(key)
        batch = images.shape[0]
        if self.horizontal:
            flip = jax.random.bernoulli(h_key, shape=(batch, 1, 1, 1))
            images = jnp.where(flip, images[:, :, ::-1, :], images)
        if self.vertical:
            flip = jax.random.bernoulli(v_key, shape=(batch, 1, 1, 1))
            images = jnp.where(flip, images[:, ::-1, :, :], images)
        return images
