"""Optimizers a config can name, each an optax chain on the configured schedule.

A leaf module (optax and the registry only), so the config loader can validate
`[train] optimizer` without importing the training loop.
"""

from collections.abc import Callable

import optax

from typedpipe.registry import Registry

#: (learning-rate schedule, weight_decay, momentum) -> the optax transformation.
Factory = Callable[[optax.ScalarOrSchedule, float, float], optax.GradientTransformation]

#: Every optimizer a config can name: `[train] optimizer = "..."`.
OPTIMIZERS: Registry[Factory] = Registry(
    "optimizer", key="optimizer", table="[train]", code="config.unknown_name"
)
OPTIMIZERS.register("adam", lambda rate, weight_decay, momentum: optax.adam(rate))
OPTIMIZERS.register(
    "adamw", lambda rate, weight_decay, momentum: optax.adamw(rate, weight_decay=weight_decay)
)
OPTIMIZERS.register(
    "sgd", lambda rate, weight_decay, momentum: optax.sgd(rate, momentum=momentum, nesterov=True)
)


def make_optimizer(
    name: str,
    learning_rate: float,
    *,
    schedule: str = "constant",
    total_steps: int = 1,
    weight_decay: float = 0.0,
    momentum: float = 0.9,
    clip_global_norm: float | None = None,
) -> optax.GradientTransformation:
    """Clipping (when set), then the named optimizer on a constant or cosine schedule."""
    rate: optax.ScalarOrSchedule = learning_rate
    if schedule == "cosine":
        rate = optax.cosine_decay_schedule(learning_rate, max(total_steps, 1))
    optimizer = OPTIMIZERS.get(name)(rate, weight_decay, momentum)
    if clip_global_norm is None:
        return optimizer
    return optax.chain(optax.clip_by_global_norm(clip_global_norm), optimizer)
