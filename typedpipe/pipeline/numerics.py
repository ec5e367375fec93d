"""Numerics in one place; each guard says what it prevents.

- Losses come from `log_softmax` (inside optax's cross-entropies), never from
  `log(softmax(x))`, which underflows to log(0) = -inf for confident logits.
- `all_finite` + `select_tree` make an update all-or-nothing: a step whose loss,
  gradients or new weights hold a NaN/inf is dropped whole, so a non-finite
  value is never written into the weights or the optimizer state.
- `LossScale` keeps float16 gradients out of underflow (scale up) without letting
  them overflow (halve on a non-finite step).
"""

import dataclasses

import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Float, Int, PyTree

from typedpipe.contracts import contract


@dataclasses.dataclass(frozen=True)
class CrossEntropy:
    """Softmax cross-entropy against integer class ids. Labels `b` ints -> `b` losses."""

    num_classes: int
    name: str = "loss"

    @contract
    def __call__(
        self, logits: Float[Array, "b {self.num_classes}"], labels: Int[Array, " b"]
    ) -> Float[Array, " b"]:
        return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)


@dataclasses.dataclass(frozen=True)
class OneHotCrossEntropy:
    """Softmax cross-entropy against one-hot rows. Labels `b num_classes` -> `b` losses."""

    num_classes: int
    name: str = "loss"

    @contract
    def __call__(
        self,
        logits: Float[Array, "b {self.num_classes}"],
        labels: Float[Array, "b {self.num_classes}"],
    ) -> Float[Array, " b"]:
        return optax.softmax_cross_entropy(logits.astype(jnp.float32), labels)


def loss_for(label_format: str, num_classes: int):
    return (OneHotCrossEntropy if label_format == "onehot" else CrossEntropy)(num_classes)


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


def select_tree(keep_new: Array, new: PyTree, old: PyTree) -> PyTree:
    """`new` where `keep_new`, else `old`, leaf by leaf (both trees share a structure)."""
    return jax.tree.map(lambda n, o: jnp.where(keep_new, n, o), new, old)


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
