"""Named architectures, one module per family, and the registry a config names them from.

Each family module defines plain functions (`entries.Architecture`); they are
registered here, by name, and nowhere else. `register_model` adds one more,
usable from a config at once.
"""

from collections.abc import Callable

from typedpipe.models.zoo import convnext, resnet, small, vit
from typedpipe.models.zoo.entries import Architecture as Architecture
from typedpipe.models.zoo.entries import LayerEntry as LayerEntry
from typedpipe.registry import Registry

#: Every model a config can name: `[model] name = "..."`.
MODELS: Registry[Architecture] = Registry(
    "model", key="name", table="model", code="config.unknown_model"
)


def register_model(name: str) -> Callable[[Architecture], Architecture]:
    """Make an architecture usable from a config as `[model] name = "<name>"`.

    Example:
        >>> @register_model("tiny")
        ... def tiny(input_shape, num_classes, layers=()):
        ...     return [{"type": "gap"}, {"type": "dense", "features": num_classes}]
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from typedpipe.models import build_model
        >>> model = build_model("tiny", (8, 8, 3), 5, rngs=nnx.Rngs(0))
        >>> model(jnp.ones((2, 8, 8, 3))).shape
        (2, 5)
    """
    return MODELS.register(name)


# One line per architecture: `[model] name` and the function that lists its layers.
for _name, _architecture in (
    ("small_cnn", small.small_cnn),
    ("lenet", small.lenet),
    ("sequential", small.sequential),
    ("resnet20", resnet.resnet20),
    ("resnet18", resnet.resnet18),
    ("resnet34", resnet.resnet34),
    ("resnet50", resnet.resnet50),
    ("convnext_tiny", convnext.convnext_tiny),
    ("vit_b_16", vit.vit_b_16),
    ("vit_s_16", vit.vit_s_16),
):
    MODELS.register(_name, _architecture)
