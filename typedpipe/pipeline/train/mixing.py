"""Mixup and cutmix, inside the jitted train step, keyed by the step.

A batch is mixed with itself reversed (image i with image b-1-i, as timm's batch mode
pairs them), by one weight `lam` drawn per batch from Beta(alpha, alpha): mixup blends
whole images, cutmix pastes a box covering a `1 - lam` share of the pixels (`lam` is then
the share actually kept, the box being clipped at the border). With both on, each batch
takes one of them with probability 1/2. Targets follow the images: `lam * y + (1 - lam) *
y_reversed`, so each row still sums to 1 (integer labels reach here as one-hot rows,
`losses.soft_targets`).
"""

import dataclasses

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from typedpipe.contracts import contract


@dataclasses.dataclass(frozen=True)
class Mixing:
    """Mixup and cutmix on a batch: `b h w c` images, `b k` targets -> the same, mixed.

    Attributes:
        mixup: mixup's Beta concentration; 0 turns it off.
        cutmix: cutmix's Beta concentration; 0 turns it off.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> images, targets = jnp.ones((4, 8, 8, 3)), jax.nn.one_hot(jnp.arange(4), 4)
        >>> mixed, soft, lam = Mixing(mixup=0.2)(images, targets, jax.random.key(0))
        >>> mixed.shape, soft.shape, bool(jnp.allclose(soft.sum(-1), 1.0))
        ((4, 8, 8, 3), (4, 4), True)
    """

    mixup: float = 0.0
    cutmix: float = 0.0

    @property
    def enabled(self) -> bool:
        return bool(self.mixup or self.cutmix)

    @contract
    def __call__(
        self,
        images: Float[Array, "b h w c"],
        targets: Float[Array, "b k"],
        key: PRNGKeyArray,
    ) -> tuple[Float[Array, "b h w c"], Float[Array, "b k"], Float[Array, ""]]:
        """The mixed images and targets, and the weight `lam` of the unreversed batch."""
        choose_key, mixup_key, cutmix_key = jax.random.split(key, 3)
        other = images[::-1]
        if self.mixup:
            lam = jax.random.beta(mixup_key, self.mixup, self.mixup).astype(jnp.float32)
            mixed = lam.astype(images.dtype) * images + (1 - lam).astype(images.dtype) * other
        if self.cutmix:
            inside, cut_lam = _box(cutmix_key, images.shape[1], images.shape[2], self.cutmix)
            cut = jnp.where(inside[None, :, :, None], other, images)
            if self.mixup:  # one of the two for each batch, as timm switches them
                use_cutmix = jax.random.bernoulli(choose_key)
                mixed = jnp.where(use_cutmix, cut, mixed)
                lam = jnp.where(use_cutmix, cut_lam, lam)
            else:
                mixed, lam = cut, cut_lam
        return mixed, lam * targets + (1 - lam) * targets[::-1], lam


def _box(key: PRNGKeyArray, height: int, width: int, alpha: float) -> tuple[Array, Array]:
    """Cutmix's box as an `h w` mask, and the share of pixels outside it.

    Its sides are `sqrt(1 - lam)` of the image's around a uniform centre, clipped at
    the border; the share kept is measured from the clipped box.
    """
    lam_key, y_key, x_key = jax.random.split(key, 3)
    lam = jax.random.beta(lam_key, alpha, alpha).astype(jnp.float32)
    ratio = jnp.sqrt(1 - lam)
    half_h = (ratio * height).astype(jnp.int32) // 2
    half_w = (ratio * width).astype(jnp.int32) // 2
    cy = jax.random.randint(y_key, (), 0, height)
    cx = jax.random.randint(x_key, (), 0, width)
    rows = jnp.arange(height)[:, None]
    cols = jnp.arange(width)[None, :]
    inside = (
        (rows >= cy - half_h) & (rows < cy + half_h) & (cols >= cx - half_w) & (cols < cx + half_w)
    )
    return inside, 1 - inside.mean(dtype=jnp.float32)
