"""The pure functions of training, built once per config: init, train step, eval step.

Like optax's `GradientTransformation(init, update)`: `make_train` returns a
`Train` whose functions close over what is static (the model's graph, the
stages, the loss, the optimizer) and take everything that changes as arguments.
`check`'s preflight traces them on shapes, `bench` times them, and `fit` runs
them: one set of functions for all three.
"""

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jaxtyping import Array, PRNGKeyArray, PyTree

from typedpipe.contracts import ConfigError
from typedpipe.models import Classifier, split_params
from typedpipe.models.weights import Loaded, assign, read_weights
from typedpipe.pipeline.config import Config
from typedpipe.pipeline.config.recipe import train_faults
from typedpipe.pipeline.sources import Batch
from typedpipe.pipeline.stages import Preprocess
from typedpipe.pipeline.train.finetune import (
    freeze_statistics,
    head_index,
    head_labels,
    kept_statistics,
)
from typedpipe.pipeline.train.losses import SoftCrossEntropy, loss_for, soft_targets
from typedpipe.pipeline.train.mixing import Mixing
from typedpipe.pipeline.train.numerics import LossScale, all_finite
from typedpipe.pipeline.train.optimizers import FineTuning, make_optimizer
from typedpipe.pipeline.train.state import Averaged, EpochSums, TrainState

COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}

Metrics = dict[str, Array]

# Mixing draws from its own stream of the step's key; the augmentations split the key itself.
_MIXING = 1


class Train(NamedTuple):
    """The training functions of one config; jit them (the state may be donated).

    `init_state(key, weights=None)`: pass `initial_weights()` to start from
    `[model] weights` (read on the host, an argument rather than a constant of the jit).
    """

    init_state: Callable[..., TrainState]
    train_step: Callable[[TrainState, Batch, PRNGKeyArray], tuple[TrainState, Metrics]]
    eval_step: Callable[[TrainState, Batch], Metrics]
    model: Callable[[TrainState], Classifier]  # the eval-mode model with the state's weights
    preprocess: Preprocess
    # The weights evaluated and exported: the moving average's when `ema_decay` is set.
    weights: Callable[[TrainState], tuple[PyTree, PyTree]]
    initial_weights: Callable[[], Loaded | None] = lambda: None


def make_train(config: Config, label_format: str, steps_per_epoch: int) -> Train:
    """The training functions of `config`; nothing is allocated until `init_state` runs.

    Args:
        config: the pipeline.
        label_format: how the labels are stored ("int" or "onehot").
        steps_per_epoch: steps in one epoch (the schedule's length is this times the epochs;
            warmup and the freeze are counted in epochs of these steps).

    Raises:
        ConfigError: `config.value`, the recipe's cross-key bounds (`train_faults`) broken
            by a config changed after loading (`train --epochs`).

    Example:
        >>> import numpy as np
        >>> from typedpipe.pipeline.config import parse_config
        >>> config = parse_config(
        ...     '[data]\\nsource = "synthetic"\\n[model]\\nname = "sequential"\\n'
        ...     'input = [8, 8, 1]\\nnum_classes = 2\\n'
        ...     'layers = [{type = "flatten"}, {type = "dense", features = 2}]\\n'
        ... )
        >>> train = make_train(config, "int", steps_per_epoch=1)
        >>> state = jax.jit(train.init_state)(jax.random.key(0))
        >>> images = np.zeros((4, 8, 8, 1), np.float32)
        >>> batch = Batch(images, np.array([0, 1, 0, 1], np.int32), np.ones(4, bool))
        >>> state, metrics = jax.jit(train.train_step)(state, batch, jax.random.key(0))
        >>> int(state.step), round(float(metrics["loss"]), 3)  # log 2: the head starts at zero
        (1, 0.693)
    """
    m, t = config.model, config.train
    problems = train_faults(t, m)
    if problems:  # a config changed after loading (`--epochs`); the loader says the same
        raise ConfigError(problems)
    preprocess = Preprocess(config.preprocess)
    loss = loss_for(label_format, m.num_classes)
    # Mixed or smoothed targets are soft rows; evaluation keeps the plain loss, so that
    # val and test losses compare across recipes.
    soft = bool(t.mixup or t.cutmix or t.label_smoothing)
    train_loss = SoftCrossEntropy(m.num_classes, t.label_smoothing) if soft else loss
    mixing = Mixing(t.mixup, t.cutmix)
    compute_dtype = COMPUTE_DTYPES[t.precision]
    freeze_steps = t.freeze_epochs * steps_per_epoch
    fine_tuning = None
    if freeze_steps:
        head = head_index(m)
        assert head is not None  # train_faults refuses a freeze without a head
        fine_tuning = FineTuning(head_labels(head), freeze_steps, t.backbone_lr_mult)
    tx = make_optimizer(
        t.optimizer,
        t.learning_rate,
        schedule=t.schedule,
        total_steps=steps_per_epoch * t.epochs,
        warmup_steps=t.warmup_epochs * steps_per_epoch,
        weight_decay=t.weight_decay,
        momentum=t.momentum,
        clip_global_norm=t.clip_global_norm,
        fine_tuning=fine_tuning,
    )

    # The graphs are static: read them off a model built on shapes alone.
    abstract = m.abstract()
    abstract.train()
    train_graph = split_params(abstract)[0]
    freeze_statistics(abstract)
    frozen_graph = split_params(abstract)[0]  # training, but BatchNorm on its running stats
    abstract.eval()
    eval_graph = split_params(abstract)[0]

    def initial_weights() -> Loaded | None:
        """`[model] weights`, read and translated for the model (None when unset)."""
        if m.weights is None:
            return None
        return read_weights(abstract, m.weights, what=f"model {m.name!r}")

    def init_state(key: PRNGKeyArray, weights: Loaded | None = None) -> TrainState:
        model = m.build(nnx.Rngs(key))
        if weights is not None:  # what the file leaves out (a new head) keeps its init
            assign(model, weights)
        _, params, rest = split_params(model)
        zero = jnp.zeros((), jnp.int32)
        return TrainState(
            step=zero,
            params=params,
            rest=rest,
            opt_state=tx.init(params),
            loss_scale=LossScale.create(enabled=t.precision == "float16"),
            skipped=zero,
            consecutive_skips=zero,
            epoch=EpochSums(jnp.zeros((), jnp.float32), zero, zero, zero),
            ema=Averaged(params, rest) if t.ema_decay else None,
        )

    def logits_of(graph, params, rest, images) -> tuple[Array, PyTree]:
        # Integer images are not cast: they must reach the model's contract as they
        # are, so that a missing to_float is a dtype.input error, not a silent fix.
        # copy=True: fresh Variables at this trace level, so BatchNorm may update them.
        model = nnx.merge(
            graph, _cast_floats(params, compute_dtype), _cast_floats(rest, compute_dtype), copy=True
        )
        logits = model(_cast_floats(images, compute_dtype))
        # Batch statistics keep their stored dtype whatever the compute dtype.
        return logits, optax.tree.cast_like(split_params(model)[2], rest)

    def train_step(state: TrainState, batch: Batch, key: PRNGKeyArray):
        key = jax.random.fold_in(key, state.step)
        images = preprocess(batch.images, key, train=True)
        targets = soft_targets(batch.labels, m.num_classes) if soft else batch.labels
        # Integer images are left unmixed: the model's contract reports them (dtype.input).
        if mixing.enabled and jnp.issubdtype(images.dtype, jnp.floating):
            images, targets, _ = mixing(images, targets, jax.random.fold_in(key, _MIXING))

        def gradients(graph):
            def loss_fn(params, rest):
                logits, rest = logits_of(graph, params, rest, images)
                value = train_loss(logits, targets).mean()
                return state.loss_scale.scale_loss(value), (value, logits, rest)

            return jax.grad(loss_fn, has_aux=True)(state.params, state.rest)

        if freeze_steps:
            frozen = state.step < freeze_steps

            def during_freeze():
                grads, (value, logits, rest) = gradients(frozen_graph)
                return grads, (value, logits, kept_statistics(rest, state.rest))

            grads, (value, logits, rest) = jax.lax.cond(
                frozen, during_freeze, lambda: gradients(train_graph)
            )
        else:
            grads, (value, logits, rest) = gradients(train_graph)
        grads = state.loss_scale.unscale(grads)
        # optax mixes Python floats with its int32 step count; keep a user's strict
        # dtype promotion for our code and let only the optimizer promote.
        with jax.numpy_dtype_promotion("standard"):
            updates, opt_state = tx.update(grads, state.opt_state, state.params, step=state.step)
        params = optax.apply_updates(state.params, updates)
        finite = all_finite(value, grads, params, rest)
        # Against the labels as stored: with mixup or cutmix, the class of the unreversed image.
        correct = (logits.argmax(-1) == _class_ids(batch.labels)).sum(dtype=jnp.int32)
        ema = state.ema
        if ema is not None:
            ema = optax.tree.where(finite, ema.update(params, rest, t.ema_decay), ema)
        # The running sums restart with every epoch.
        sums = optax.tree.where(state.step % steps_per_epoch == 0, _zeros(state.epoch), state.epoch)
        new_state = TrainState(
            step=state.step + 1,
            params=optax.tree.where(finite, params, state.params),
            rest=optax.tree.where(finite, rest, state.rest),
            opt_state=optax.tree.where(finite, opt_state, state.opt_state),
            loss_scale=state.loss_scale.adjust(finite),
            skipped=state.skipped + (~finite).astype(jnp.int32),
            consecutive_skips=jnp.where(finite, 0, state.consecutive_skips + 1),
            epoch=EpochSums(
                loss=sums.loss + jnp.where(finite, value.astype(jnp.float32), 0.0),
                finite_steps=sums.finite_steps + finite.astype(jnp.int32),
                correct=sums.correct + correct,
                images=sums.images + batch.labels.shape[0],
            ),
            ema=ema,
        )
        # The guard's counters ride along: reading a step's metrics, unlike its state,
        # need not wait for the steps queued after it (`NumericGuard`).
        counters = {"skipped": new_state.skipped, "consecutive_skips": new_state.consecutive_skips}
        return new_state, {"loss": value, "finite": finite, **counters}

    def weights(state: TrainState) -> tuple[PyTree, PyTree]:
        averaged = state.ema
        return (state.params, state.rest) if averaged is None else (averaged.params, averaged.rest)

    def eval_step(state: TrainState, batch: Batch) -> Metrics:
        images = preprocess(batch.images, train=False)
        logits, _ = logits_of(eval_graph, *weights(state), images)
        losses = loss(logits, batch.labels)
        predictions = logits.argmax(-1)
        return {
            "predictions": predictions,
            "loss_sum": jnp.where(batch.mask, losses, 0.0).sum(),
            "correct": ((predictions == _class_ids(batch.labels)) & batch.mask).sum(),
        }

    def model(state: TrainState) -> Classifier:
        return nnx.merge(eval_graph, state.params, state.rest)

    return Train(init_state, train_step, eval_step, model, preprocess, weights, initial_weights)


def _cast_floats(tree: PyTree, dtype) -> PyTree:
    """Floating leaves in `dtype`; integer pixels, counters and RNG keys as they are."""

    def cast(leaf):
        return leaf.astype(dtype) if jnp.issubdtype(leaf.dtype, jnp.floating) else leaf

    return jax.tree.map(cast, tree)


def _class_ids(labels: Array) -> Array:
    return labels.argmax(-1) if labels.ndim == 2 else labels


def _zeros(tree: PyTree) -> PyTree:
    return jax.tree.map(jnp.zeros_like, tree)
