"""The train state: one pytree holding everything that decides what the next step does.

Weights, batch statistics and dropout RNG state, the optimizer state, the loss
scale, the numeric guard's counters, the step counter (from which every random
key is derived) and the running sums of the current epoch. A checkpoint of it
resumes a run exactly, mid-epoch included.
"""

import dataclasses

import jax
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
class TrainState:
    step: Array  # steps taken, skipped ones included: every key is fold_in(base, step)
    params: PyTree
    rest: PyTree  # batch statistics and dropout RNG state
    opt_state: PyTree
    loss_scale: LossScale
    skipped: Array
    consecutive_skips: Array
    epoch: EpochSums
