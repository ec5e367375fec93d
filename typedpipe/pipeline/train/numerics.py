"""Numerics in one place; each guard says what it prevents.

- Losses come from `log_softmax` (inside optax's cross-entropies), never from
  `log(softmax(x))`, which underflows to log(0) = -inf for confident logits.
- `all_finite` + `optax.tree.where` make an update all-or-nothing: a step whose
  loss, gradients or new weights hold a NaN/inf is dropped whole, so a
  non-finite value is never written into the weights or the optimizer state.
- `LossScale` keeps float16 gradients out of underflow (scale up) without letting
  them overflow (halve on a non-finite step).
"""

import dataclasses

import jax
import jax.numpy as jnp
from jaxtyping import Array, PyTree


def all_finite(*trees: PyTree) -> Array:
    """True when every floating leaf of every tree is free of NaN and inf."""
    leaves = [
        leaf
        for tree in trees
        for leaf in jax.tree.leaves(tree)
        if jnp.issubdtype(jnp.asarray(leaf).dtype, jnp.inexact)
    ]
    if not leaves:
        return jnp.asarray(True)
    return jnp.stack([jnp.isfinite(leaf).all() for leaf in leaves]).all()


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class LossScale:
    """Dynamic loss scaling for float16 training.

    The loss is multiplied by `scale` before differentiation so small gradients
    survive float16; gradients are divided by it again before the update. A
    non-finite step halves the scale; `period` finite steps in a row double it.
    With `enabled` False every operation is the identity.
    """

    scale: Array
    good_steps: Array
    period: int = dataclasses.field(default=2000, metadata={"static": True})
    enabled: bool = dataclasses.field(default=False, metadata={"static": True})

    @classmethod
    def create(cls, enabled: bool, initial: float = 2.0**15) -> "LossScale":
        return cls(
            jnp.asarray(initial if enabled else 1.0, jnp.float32),
            jnp.asarray(0, jnp.int32),
            enabled=enabled,
        )

    def scale_loss(self, loss: Array) -> Array:
        return loss * self.scale if self.enabled else loss

    def unscale(self, grads: PyTree) -> PyTree:
        if not self.enabled:
            return grads
        return jax.tree.map(lambda g: (g / self.scale).astype(g.dtype), grads)

    def adjust(self, finite: Array) -> "LossScale":
        if not self.enabled:
            return self
        grow = finite & (self.good_steps + 1 >= self.period)
        scale = jnp.where(
            finite, jnp.where(grow, self.scale * 2, self.scale), jnp.maximum(self.scale / 2, 1.0)
        )
        good = jnp.where(finite & ~grow, self.good_steps + 1, 0)
        return dataclasses.replace(self, scale=scale, good_steps=good)
