"""Losses from `log_softmax` (inside optax's cross-entropies), typed by their label format.

Training, evaluation and the exported model's `evaluate` all use these, so the
loss a user reads means one thing everywhere.
"""

import dataclasses

import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Float, Int

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


@dataclasses.dataclass(frozen=True)
class SoftCrossEntropy:
    """Softmax cross-entropy against soft rows (mixed, or one-hot), smoothed by `smoothing`
    (optax's `smooth_labels`: `(1 - smoothing) * y + smoothing / num_classes`).
    Targets `b num_classes` -> `b` losses; `soft_targets` makes them from integer labels."""

    num_classes: int
    smoothing: float = 0.0
    name: str = "loss"

    @contract
    def __call__(
        self,
        logits: Float[Array, "b {self.num_classes}"],
        targets: Float[Array, "b {self.num_classes}"],
    ) -> Float[Array, " b"]:
        targets = targets.astype(jnp.float32)
        if self.smoothing:
            targets = optax.smooth_labels(targets, self.smoothing)
        return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)


def soft_targets(labels: Array, num_classes: int) -> Array:
    """Float32 rows: one-hot for integer class ids, the stored rows for one-hot labels."""
    if labels.ndim == 1:
        return jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
    return labels.astype(jnp.float32)


def loss_for(label_format: str, num_classes: int) -> CrossEntropy | OneHotCrossEntropy:
    """The cross-entropy for labels stored as `"int"` class ids or `"onehot"` rows."""
    return (OneHotCrossEntropy if label_format == "onehot" else CrossEntropy)(num_classes)
