"""Training: one jitted step (preprocess, model, loss, gradient, guarded update) and its loop.

The step is pure: `TrainState -> TrainState`. A step whose loss, gradients or new
weights hold a NaN/inf is dropped whole (see `numerics`), counted, and, past
`max_consecutive_skips` or with `on_nonfinite = "stop"`, ends training with a
`numeric.nonfinite` diagnostic naming the first layer that went non-finite.
"""

import collections
import dataclasses
import time
from collections.abc import Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jaxtyping import Array, PyTree

from typedpipe.contracts import Diagnostic
from typedpipe.contracts.diagnostics import TrainingStopped
from typedpipe.models import Classifier, build_model, split_params
from typedpipe.pipeline.config import Config, TrainConfig
from typedpipe.pipeline.numerics import LossScale, all_finite, loss_for, select_tree
from typedpipe.pipeline.sharding import Placement
from typedpipe.pipeline.sources import Dataset
from typedpipe.pipeline.stages import Preprocess

COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}

# Host reads of the step metrics force a device sync; do it every few steps.
LOG_EVERY = 10


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class TrainState:
    params: PyTree
    rest: PyTree  # batch statistics and dropout RNG state
    opt_state: PyTree
    loss_scale: LossScale
    skipped: Array
    consecutive_skips: Array


def make_optimizer(train: TrainConfig, total_steps: int) -> optax.GradientTransformation:
    """Clipping, then the configured optimizer on the configured schedule."""
    rate = train.learning_rate
    if train.schedule == "cosine":
        rate = optax.cosine_decay_schedule(train.learning_rate, max(total_steps, 1))
    optimizer = {
        "adam": lambda: optax.adam(rate),
        "adamw": lambda: optax.adamw(rate, weight_decay=train.weight_decay),
        "sgd": lambda: optax.sgd(rate, momentum=train.momentum, nesterov=True),
    }[train.optimizer]()
    if train.clip_global_norm is None:
        return optimizer
    return optax.chain(optax.clip_by_global_norm(train.clip_global_norm), optimizer)


def batches(
    dataset: Dataset, batch_size: int, rng: np.random.Generator | None = None
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(images, labels, mask) batches of exactly `batch_size`, so the step compiles once.

    Shuffled with `rng` for training, which then drops the last partial batch;
    in order otherwise, the last batch padded and masked.
    """
    order = rng.permutation(len(dataset)) if rng is not None else np.arange(len(dataset))
    for start in range(0, len(order), batch_size):
        index = order[start : start + batch_size]
        if len(index) < batch_size:
            if rng is not None:
                return
            index = np.concatenate([index, np.zeros(batch_size - len(index), index.dtype)])
        mask = np.arange(batch_size) < len(order) - start
        yield dataset.images[index], dataset.labels[index], mask


class Trainer:
    """The compiled train and eval steps of one config, and the state they carry."""

    def __init__(
        self,
        config: Config,
        label_format: str,
        steps_per_epoch: int,
        placement: Placement | None = None,
        *,
        abstract: bool = False,
    ):
        """With `abstract`, the state holds only shapes and dtypes: nothing is allocated,
        and the steps can be traced or compiled but not run (see `preflight`)."""
        self.config = config
        self.placement = placement or Placement(devices=1)
        self.preprocess = Preprocess(config.preprocess)
        self.loss = loss_for(label_format, config.model.num_classes)
        self.compute_dtype = COMPUTE_DTYPES[config.train.precision]

        def make_model() -> Classifier:
            m = config.model
            return build_model(m.name, m.input, m.num_classes, m.layers, rngs=nnx.Rngs(config.seed))

        model = nnx.eval_shape(make_model) if abstract else make_model()
        model.train()
        self.train_graph, params, rest = split_params(model)
        model.eval()
        self.eval_graph = split_params(model)[0]
        total_steps = steps_per_epoch * config.train.epochs
        self.tx = make_optimizer(config.train, total_steps)
        opt_state = jax.eval_shape(self.tx.init, params) if abstract else self.tx.init(params)
        state = TrainState(
            params,
            rest,
            opt_state,
            LossScale.create(enabled=config.train.precision == "float16"),
            jnp.asarray(0, jnp.int32),
            jnp.asarray(0, jnp.int32),
        )
        self.state = state if abstract else self.placement.replicate(state)
        self.train_step = jax.jit(self._train_step, donate_argnums=0)
        self.eval_step = jax.jit(self._eval_step)

    def model(self, state: TrainState | None = None) -> Classifier:
        """The eval-mode model with the given (default: current) weights."""
        state = state or self.state
        return nnx.merge(self.eval_graph, state.params, state.rest)

    def _cast(self, tree: PyTree) -> PyTree:
        def cast(leaf):
            return (
                leaf.astype(self.compute_dtype)
                if jnp.issubdtype(leaf.dtype, jnp.floating)
                else leaf
            )

        return jax.tree.map(cast, tree)

    def _logits(self, graph, params, rest, images) -> tuple[Array, PyTree]:
        # Integer images are not cast: they must reach the model's contract as they
        # are, so that a missing to_float is a dtype.input error, not a silent fix.
        # copy=True: fresh Variables at this trace level, so BatchNorm may update them.
        model = nnx.merge(graph, self._cast(params), rest, copy=True)
        logits = model(self._cast(images))
        new_rest = split_params(model)[2]
        # Batch statistics keep their stored dtype whatever the compute dtype.
        return logits, jax.tree.map(lambda n, o: n.astype(o.dtype), new_rest, rest)

    def _train_step(self, state: TrainState, images, labels, key):
        images = self.preprocess(images, key, train=True)

        def loss_fn(params, rest):
            logits, rest = self._logits(self.train_graph, params, rest, images)
            loss = self.loss(logits, labels).mean()
            return state.loss_scale.scale_loss(loss), (loss, logits, rest)

        grads, (loss, logits, rest) = jax.grad(loss_fn, has_aux=True)(state.params, state.rest)
        grads = state.loss_scale.unscale(grads)
        # optax mixes Python floats with its int32 step count; keep a user's strict
        # dtype promotion for our code and let only the optimizer promote.
        with jax.numpy_dtype_promotion("standard"):
            updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        finite = all_finite(loss, grads, params, rest)
        new_state = TrainState(
            params=select_tree(finite, params, state.params),
            rest=select_tree(finite, rest, state.rest),
            opt_state=select_tree(finite, opt_state, state.opt_state),
            loss_scale=state.loss_scale.adjust(finite),
            skipped=state.skipped + (~finite).astype(jnp.int32),
            consecutive_skips=jnp.where(finite, 0, state.consecutive_skips + 1),
        )
        classes = labels.argmax(-1) if labels.ndim == 2 else labels
        correct = (logits.argmax(-1) == classes).sum()
        return new_state, {"loss": loss, "correct": correct, "finite": finite}

    def _eval_step(self, state: TrainState, images, labels, mask):
        images = self.preprocess(images, train=False)
        logits, _ = self._logits(self.eval_graph, state.params, state.rest, images)
        losses = self.loss(logits, labels)
        return logits.argmax(-1), jnp.where(mask, losses, 0.0).sum()

    def evaluate(self, dataset: Dataset, batch_size: int) -> dict[str, float | np.ndarray]:
        """Accuracy, mean loss and predictions over a whole split."""
        predictions, loss_sum = [], 0.0
        for images, labels, mask in batches(dataset, batch_size):
            preds, batch_loss = self.eval_step(
                self.state,
                self.placement.batch(images),
                self.placement.batch(labels),
                self.placement.batch(mask),
            )
            predictions.append(np.asarray(preds)[mask])
            loss_sum += float(batch_loss)
        if not predictions:
            return {"accuracy": float("nan"), "loss": float("nan"), "predictions": np.array([])}
        predicted = np.concatenate(predictions)
        return {
            "accuracy": float((predicted == dataset.class_ids).mean()),
            "loss": loss_sum / len(dataset),
            "predictions": predicted,
        }


def first_nonfinite_layer(model: Classifier, images: Array, preprocess: Preprocess) -> str:
    """Run `images` eagerly layer by layer; the first layer whose output is non-finite."""
    x = preprocess(images, train=False)
    if not bool(jnp.isfinite(x).all()):
        return "preprocess (the input batch)"
    for layer in model.layers:
        x = layer(x)
        if not bool(jnp.isfinite(x).all()):
            return layer.name
    return "the backward pass (gradients or the update; every forward output is finite)"


@dataclasses.dataclass
class EpochStats:
    epoch: int
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    seconds: float
    skipped_steps: int


def fit(
    trainer: Trainer,
    train: Dataset,
    val: Dataset,
    *,
    epochs: int,
    start_epoch: int = 0,
    max_steps: int | None = None,
    on_epoch: Callable[[EpochStats], None] = lambda s: None,
    on_step: Callable[[int, float], None] = lambda step, loss: None,
) -> dict[str, float]:
    """Train `trainer` for `epochs`; returns timing and step counts.

    Raises:
        TrainingStopped: the numeric guard stopped training (`numeric.nonfinite`).
    """
    config = trainer.config.train
    placement = trainer.placement
    base_key = jax.random.key(trainer.config.seed)
    steps, images_seen, timed_seconds = 0, 0, 0.0
    recent: collections.deque[np.ndarray] = collections.deque(maxlen=LOG_EVERY)
    for epoch in range(start_epoch, epochs):
        rng = np.random.default_rng([trainer.config.seed, epoch])
        started, pending = time.perf_counter(), []
        for images, labels, _ in batches(train, config.batch_size, rng):
            key = jax.random.fold_in(base_key, epoch * 1_000_003 + steps)
            trainer.state, metrics = trainer.train_step(
                trainer.state, placement.batch(images), placement.batch(labels), key
            )
            pending.append(metrics)
            recent.append(images)
            steps += 1
            images_seen += len(images)
            if steps % LOG_EVERY == 0 or steps == max_steps:
                _guard(trainer, recent)
                on_step(steps, float(metrics["loss"]))
            if steps == max_steps:
                break
        _guard(trainer, recent)
        on_step(steps, float(pending[-1]["loss"]) if pending else float("nan"))
        # The first epoch includes compilation; throughput counts the others
        # (or the first, if it is the only one).
        seconds = time.perf_counter() - started
        if epoch > start_epoch or epochs - start_epoch == 1:
            timed_seconds += seconds
        fetched = jax.device_get(pending)
        count = max(len(fetched), 1) * config.batch_size
        val_metrics = trainer.evaluate(val, config.batch_size)
        on_epoch(
            EpochStats(
                epoch=epoch + 1,
                train_loss=float(np.mean([m["loss"] for m in fetched if m["finite"]] or [np.nan])),
                train_accuracy=float(sum(m["correct"] for m in fetched) / count),
                val_loss=float(val_metrics["loss"]),
                val_accuracy=float(val_metrics["accuracy"]),
                seconds=seconds,
                skipped_steps=int(trainer.state.skipped),
            )
        )
        if steps == max_steps:
            break
    timed_epochs = max(epochs - start_epoch - 1, 1)
    per_epoch = images_seen / max(epochs - start_epoch, 1)
    return {
        "steps": steps,
        "skipped_steps": int(trainer.state.skipped),
        "images_per_second": per_epoch * timed_epochs / timed_seconds if timed_seconds else 0.0,
    }


def _guard(trainer: Trainer, recent) -> None:
    """Stop on non-finite steps as the config says; the weights are still the last finite ones."""
    config = trainer.config.train
    skipped = int(trainer.state.skipped)
    consecutive = int(trainer.state.consecutive_skips)
    if skipped == 0:
        return
    if config.on_nonfinite == "stop" or consecutive > config.max_consecutive_skips:
        model = trainer.model()
        culprits = [
            first_nonfinite_layer(model, jnp.asarray(images), trainer.preprocess)
            for images in recent
        ]
        layer = next((c for c in culprits if not c.startswith("the backward")), culprits[-1])
        raise TrainingStopped(
            Diagnostic(
                "numeric.nonfinite",
                f"training produced NaN/inf ({skipped} step(s) skipped, "
                f"{consecutive} in a row); first non-finite layer: {layer}",
                stage=layer,
                expected="finite loss, gradients and weights",
                got="NaN/inf",
                hint="lower [train] learning_rate, keep clip_global_norm set, check the data for "
                'NaN/inf (typedpipe check), or use precision = "float32"',
            )
        )
