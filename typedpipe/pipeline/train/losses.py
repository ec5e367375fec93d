"""Losses from `log_softmax` (inside optax's cross-entropies), typed by their label format.

Training, evaluation and the exported model's `evaluate` all use these, so the
loss a user reads means one thing everywhere.
"""

import dataclasses

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


def loss_for(label_format: str, num_classes: int) -> CrossEntropy | OneHotCrossEntropy:
    """The cross-entropy for labels stored as `"int"` class ids or `"onehot"` rows."""
    return (OneHotCrossEntropy if label_format == "onehot" else CrossEntropy)(num_classes)
