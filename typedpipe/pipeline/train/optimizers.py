"""Optimizers a config can name, each an optax chain on the configured schedule.

A leaf module (optax and the registry only), so the config loader can validate
`[train] optimizer` and the keys each optimizer reads without importing the
training loop.
"""

import dataclasses
from collections.abc import Callable

import optax

from typedpipe.registry import Registry

#: The `[train]` keys that belong to an optimizer; each optimizer reads some of them.
OPTIMIZER_KEYS = ("weight_decay", "momentum")


@dataclasses.dataclass(frozen=True)
class Optimizer:
    """An optimizer a config can name: its optax factory and the `[train]` keys it reads.

    `build(rate, **{key: value for key in reads})` is the transformation. A key of
    `OPTIMIZER_KEYS` outside `reads` is one the optimizer ignores, so a config that
    writes it is refused (adam takes no weight decay: that is adamw).
    """

    build: Callable[..., optax.GradientTransformation]
    reads: tuple[str, ...] = ()


def _sgd(rate: optax.ScalarOrSchedule, weight_decay: float, momentum: float):
    # Coupled L2 decay, added to the gradient before momentum, as PyTorch's SGD does it.
    return optax.chain(
        optax.add_decayed_weights(weight_decay),
        optax.sgd(rate, momentum=momentum, nesterov=True),
    )


#: Every optimizer a config can name: `[train] optimizer = "..."`.
OPTIMIZERS: Registry[Optimizer] = Registry(
    "optimizer", key="optimizer", table="[train]", code="config.unknown_name"
)
OPTIMIZERS.register("adam", Optimizer(optax.adam))
OPTIMIZERS.register(
    "adamw",
    Optimizer(
        lambda rate, weight_decay: optax.adamw(rate, weight_decay=weight_decay),
        reads=("weight_decay",),
    ),
)
OPTIMIZERS.register("sgd", Optimizer(_sgd, reads=("weight_decay", "momentum")))


def ignored_keys(name: str) -> tuple[str, ...]:
    """The optimizer keys that optimizer `name` does not read (none for an unknown name)."""
    if name not in OPTIMIZERS:
        return ()
    reads = OPTIMIZERS.get(name).reads
    return tuple(key for key in OPTIMIZER_KEYS if key not in reads)


def optimizer_for(keys: tuple[str, ...], instead_of: str) -> str | None:
    """The optimizer that reads every one of `keys`, the closest in name to `instead_of`."""
    import difflib

    fits = [n for n in OPTIMIZERS.names() if all(k in OPTIMIZERS.get(n).reads for k in keys)]
    if not fits:
        return None
    return max(fits, key=lambda n: difflib.SequenceMatcher(None, n, instead_of).ratio())


def learning_rate_schedule(
    learning_rate: float, *, schedule: str = "constant", total_steps: int = 1, warmup_steps: int = 0
) -> optax.Schedule:
    """The configured schedule, after `warmup_steps` of linear warmup from 0 (optax's).

    The cosine decays to 0 at `total_steps`, warmup included (as
    `optax.warmup_cosine_decay_schedule` counts); a constant rate holds after warmup.
    """
    total_steps = max(total_steps, 1)
    if warmup_steps <= 0:
        if schedule == "cosine":
            return optax.cosine_decay_schedule(learning_rate, total_steps)
        return optax.constant_schedule(learning_rate)
    if schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(
            0.0, learning_rate, warmup_steps, max(total_steps, warmup_steps + 1), end_value=0.0
        )
    return optax.join_schedules(
        [
            optax.linear_schedule(0.0, learning_rate, warmup_steps),
            optax.constant_schedule(learning_rate),
        ],
        [warmup_steps],
    )


@dataclasses.dataclass(frozen=True)
class FineTuning:
    """Train the head alone for `freeze_steps` steps, then the backbone too, at a scaled rate.

    `labels(params)` names each parameter leaf `"head"` or `"backbone"`. The switch is
    read from the train state's step counter (passed to `update` as `step=`), so a
    restored state resumes on the right side of it.
    """

    labels: Callable[[optax.Params], optax.Params]
    freeze_steps: int
    backbone_lr_mult: float = 1.0

    def thawed(self, inner: optax.GradientTransformation) -> optax.GradientTransformation:
        """`inner` once the freeze is over; before, zero updates and `inner`'s state untouched
        (optax's `conditionally_mask`): the backbone's moments start when it starts training."""
        return optax.transforms.conditionally_mask(
            inner, lambda count, step: step >= self.freeze_steps, forward_extra_args=True
        )


def make_optimizer(
    name: str,
    learning_rate: float,
    *,
    schedule: str = "constant",
    total_steps: int = 1,
    warmup_steps: int = 0,
    weight_decay: float = 0.0,
    momentum: float = 0.9,
    clip_global_norm: float | None = None,
    fine_tuning: FineTuning | None = None,
) -> optax.GradientTransformationExtraArgs:
    """Clipping (when set), then the named optimizer on its schedule (`learning_rate_schedule`).

    The optimizer is given the keys it reads and no others. With `fine_tuning`, optax's
    `partition` gives the head and the backbone each their own optimizer: the backbone's
    is masked during the freeze, and then runs at `backbone_lr_mult` times the rate
    (continuing the schedule where the head's stands). Its `update` takes `step=`, the
    train state's step counter.

    Example:
        >>> import jax.numpy as jnp
        >>> tx = make_optimizer("adamw", 1e-3, schedule="cosine", total_steps=100, warmup_steps=10)
        >>> state = tx.init({"w": jnp.ones(3)})
        >>> rate = learning_rate_schedule(1e-3, schedule="cosine", total_steps=100, warmup_steps=10)
        >>> round(float(rate(0)), 6), round(float(rate(10)), 6)  # warmup from 0, then cosine
        (0.0, 0.001)
    """
    rate = learning_rate_schedule(
        learning_rate, schedule=schedule, total_steps=total_steps, warmup_steps=warmup_steps
    )
    optimizer_type = OPTIMIZERS.get(name)
    values = {"weight_decay": weight_decay, "momentum": momentum}

    def optimizer(rate: optax.ScalarOrSchedule) -> optax.GradientTransformation:
        return optimizer_type.build(rate, **{key: values[key] for key in optimizer_type.reads})

    stages: list[optax.GradientTransformation] = []
    if fine_tuning is None:
        transform = optimizer(rate)
    else:
        freeze, mult = fine_tuning.freeze_steps, fine_tuning.backbone_lr_mult
        # The backbone's own count starts at 0 when it thaws; its rate continues the schedule.
        backbone_rate = lambda count: mult * rate(count + freeze)  # noqa: E731
        transform = optax.partition(
            {"head": optimizer(rate), "backbone": fine_tuning.thawed(optimizer(backbone_rate))},
            fine_tuning.labels,
        )
        # Frozen gradients are zeroed before the clip, so the clip's norm is the head's alone.
        stages.append(
            optax.partition(
                {"head": optax.identity(), "backbone": fine_tuning.thawed(optax.identity())},
                fine_tuning.labels,
            )
        )
    if clip_global_norm is not None:
        stages.append(optax.clip_by_global_norm(clip_global_norm))
    if not stages:  # the state exactly as the optimizer's own: older checkpoints restore
        return optax.with_extra_args_support(transform)
    return optax.chain(*stages, transform)
