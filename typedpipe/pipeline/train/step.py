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

from typedpipe.models import Classifier, build_model, split_params
from typedpipe.models.weights import Loaded, assign, read_weights
from typedpipe.pipeline.config import Config
from typedpipe.pipeline.sources import Batch
from typedpipe.pipeline.stages import Preprocess
from typedpipe.pipeline.train.losses import loss_for
from typedpipe.pipeline.train.numerics import LossScale, all_finite
from typedpipe.pipeline.train.optimizers import make_optimizer
from typedpipe.pipeline.train.state import EpochSums, TrainState

COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}

Metrics = dict[str, Array]


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
    initial_weights: Callable[[], Loaded | None] = lambda: None


def make_train(config: Config, label_format: str, steps_per_epoch: int) -> Train:
    """The training functions of `config`; nothing is allocated until `init_state` runs.

    Args:
        config: the pipeline.
        label_format: how the labels are stored ("int" or "onehot").
        steps_per_epoch: steps in one epoch (the schedule's length is this times the epochs).

    Example:
        >>> train = make_train(config, "int", steps_per_epoch=19)
        >>> state = jax.jit(train.init_state)(jax.random.key(0))
        >>> state, metrics = jax.jit(train.train_step)(state, batch, jax.random.key(0))
    """
    m, t = config.model, config.train
    preprocess = Preprocess(config.preprocess)
    loss = loss_for(label_format, m.num_classes)
    compute_dtype = COMPUTE_DTYPES[t.precision]
    tx = make_optimizer(
        t.optimizer,
        t.learning_rate,
        schedule=t.schedule,
        total_steps=steps_per_epoch * t.epochs,
        weight_decay=t.weight_decay,
        momentum=t.momentum,
        clip_global_norm=t.clip_global_norm,
    )

    def new_model(key: PRNGKeyArray) -> Classifier:
        return build_model(m.name, m.input, m.num_classes, m.layers, rngs=nnx.Rngs(key))

    # The graphs are static: read them off a model built on shapes alone.
    abstract = nnx.eval_shape(lambda: new_model(jax.random.key(0)))
    abstract.train()
    train_graph = split_params(abstract)[0]
    abstract.eval()
    eval_graph = split_params(abstract)[0]

    def initial_weights() -> Loaded | None:
        """`[model] weights`, read and translated for the model (None when unset)."""
        if m.weights is None:
            return None
        return read_weights(abstract, m.weights, what=f"model {m.name!r}")

    def init_state(key: PRNGKeyArray, weights: Loaded | None = None) -> TrainState:
        model = new_model(key)
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

        def loss_fn(params, rest):
            logits, rest = logits_of(train_graph, params, rest, images)
            value = loss(logits, batch.labels).mean()
            return state.loss_scale.scale_loss(value), (value, logits, rest)

        grads, (value, logits, rest) = jax.grad(loss_fn, has_aux=True)(state.params, state.rest)
        grads = state.loss_scale.unscale(grads)
        # optax mixes Python floats with its int32 step count; keep a user's strict
        # dtype promotion for our code and let only the optimizer promote.
        with jax.numpy_dtype_promotion("standard"):
            updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        finite = all_finite(value, grads, params, rest)
        correct = (logits.argmax(-1) == _class_ids(batch.labels)).sum(dtype=jnp.int32)
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
        )
        # The guard's counters ride along: reading a step's metrics, unlike its state,
        # need not wait for the steps queued after it (`NumericGuard`).
        counters = {"skipped": new_state.skipped, "consecutive_skips": new_state.consecutive_skips}
        return new_state, {"loss": value, "finite": finite, **counters}

    def eval_step(state: TrainState, batch: Batch) -> Metrics:
        images = preprocess(batch.images, train=False)
        logits, _ = logits_of(eval_graph, state.params, state.rest, images)
        losses = loss(logits, batch.labels)
        predictions = logits.argmax(-1)
        return {
            "predictions": predictions,
            "loss_sum": jnp.where(batch.mask, losses, 0.0).sum(),
            "correct": ((predictions == _class_ids(batch.labels)) & batch.mask).sum(),
        }

    def model(state: TrainState) -> Classifier:
        return nnx.merge(eval_graph, state.params, state.rest)

    return Train(init_state, train_step, eval_step, model, preprocess, initial_weights)


def _cast_floats(tree: PyTree, dtype) -> PyTree:
    """Floating leaves in `dtype`; integer pixels, counters and RNG keys as they are."""

    def cast(leaf):
        return leaf.astype(dtype) if jnp.issubdtype(leaf.dtype, jnp.floating) else leaf

    return jax.tree.map(cast, tree)


def _class_ids(labels: Array) -> Array:
    return labels.argmax(-1) if labels.ndim == 2 else labels


def _zeros(tree: PyTree) -> PyTree:
    return jax.tree.map(jnp.zeros_like, tree)
