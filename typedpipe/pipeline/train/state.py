"""The train state: one pytree holding everything that decides what the next step does.

Weights, batch statistics and dropout RNG state, the optimizer state, the loss
scale, the numeric guard's counters, the step counter (from which every random
key is derived, and at which the freeze of a fine-tuning run ends), the running
sums of the current epoch and the weights' moving average. A checkpoint of it
resumes a run exactly, mid-epoch included.
"""

import dataclasses

import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, PyTree

from typedpipe.pipeline.train.numerics import LossScale


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class EpochSums:
    """Running sums over the current epoch's steps, kept on the device (no per-step sync)."""

    loss: Array  # summed over finite steps
    finite_steps: Array
    correct: Array
    images: Array


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Averaged:
    """An exponential moving average of the weights (`[train] ema_decay`): parameters and
    batch statistics. What evaluation and the export use when it is on."""

    params: PyTree
    rest: PyTree  # batch statistics averaged; the RNG state copied (evaluation uses none)

    def update(self, params: PyTree, rest: PyTree, decay: float) -> "Averaged":
        """`decay * average + (1 - decay) * new` (optax's `incremental_update`), leaf by leaf."""

        def average(new, old):
            if not jnp.issubdtype(new.dtype, jnp.floating):
                return new
            return optax.incremental_update(new, old, 1.0 - decay).astype(old.dtype)

        return Averaged(
            jax.tree.map(average, params, self.params), jax.tree.map(average, rest, self.rest)
        )


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class TrainState:
    step: Array  # steps taken, skipped ones included: every key is fold_in(base, step)
    params: PyTree
    rest: PyTree  # batch statistics and dropout RNG state
    opt_state: PyTree
    loss_scale: LossScale
    skipped: Array
    consecutive_skips: Array
    epoch: EpochSums
    ema: Averaged | None = None  # None unless `[train] ema_decay` is set
