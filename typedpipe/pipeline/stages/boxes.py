"""Random boxes, one per image: an area share and a log-uniform aspect ratio, as torchvision
draws them for RandomResizedCrop and RandomErasing, vectorised over the batch."""

import math
import typing

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Int, PRNGKeyArray

#: How many draws an image gets before a box that fits is given up (torchvision's 10).
ATTEMPTS = 10


class Boxes(typing.NamedTuple):
    """One box per image, in pixels: top-left corner, size, and whether a draw fitted."""

    top: Int[Array, " b"]
    left: Int[Array, " b"]
    height: Int[Array, " b"]
    width: Int[Array, " b"]
    found: Bool[Array, " b"]


def sample_boxes(
    key: PRNGKeyArray,
    batch: int,
    image: tuple[int, int],
    scale: tuple[float, float],
    ratio: tuple[float, float],
    *,
    within: tuple[int, int],
) -> Boxes:
    """A box per image whose area is a share in `scale` of the image's and whose
    width / height lies in `ratio` (drawn log-uniformly), placed uniformly.

    Each image gets `ATTEMPTS` draws at once and keeps the first whose size fits
    `within` (height, width); `found` is False where none did (the caller decides what
    stands in, a center crop or no erasing). No Python loop runs over the batch.

    Args:
        key: the randomness; the same key gives the same boxes.
        batch: the number of images.
        image: (height, width) of the images.
        scale: the range of the box's area as a share of the image's.
        ratio: the range of the box's width / height.
        within: the largest (height, width) a box may have.

    Example:
        >>> boxes = sample_boxes(jax.random.key(0), 4, (32, 32), (0.5, 1.0), (0.75, 1.25),
        ...                      within=(32, 32))
        >>> boxes.top.shape
        (4,)
    """
    area_key, ratio_key, top_key, left_key = jax.random.split(key, 4)
    draws = (batch, ATTEMPTS)
    area = (image[0] * image[1]) * jax.random.uniform(
        area_key, draws, minval=scale[0], maxval=scale[1]
    )
    log_ratio = jax.random.uniform(
        ratio_key, draws, minval=math.log(ratio[0]), maxval=math.log(ratio[1])
    )
    aspect = jnp.exp(log_ratio)
    width = jnp.round(jnp.sqrt(area * aspect)).astype(jnp.int32)
    height = jnp.round(jnp.sqrt(area / aspect)).astype(jnp.int32)
    fits = (height > 0) & (height <= within[0]) & (width > 0) & (width <= within[1])
    first = jnp.argmax(fits, axis=1)[:, None]  # the first draw that fits (0 where none does)
    height = jnp.take_along_axis(height, first, axis=1)[:, 0]
    width = jnp.take_along_axis(width, first, axis=1)[:, 0]
    found = fits.any(axis=1)
    # Where nothing fitted the size is clamped so that the placement below stays valid.
    height = jnp.clip(height, 1, image[0])
    width = jnp.clip(width, 1, image[1])
    top = jax.random.randint(top_key, (batch,), 0, image[0] - height + 1)
    left = jax.random.randint(left_key, (batch,), 0, image[1] - width + 1)
    return Boxes(top, left, height, width, found)
