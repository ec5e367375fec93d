"""What a named architecture is: a function from the input to a list of layer entries.

A named model and a hand-written `sequential` one are therefore built, checked
and summarised by the same code. Every family module under `models/zoo/`
writes its architectures with these types and helpers.
"""

from collections.abc import Callable, Sequence
from typing import Any

from typedpipe.models.layers import Shape

#: One `[model] layers` entry: `{"type": "conv", "features": 32, ...}`.
LayerEntry = dict[str, Any]
#: (input shape, number of classes, the config's `layers`) -> layer entries.
Architecture = Callable[[Shape, int, Sequence[LayerEntry]], list[LayerEntry]]


def conv(
    features: int,
    kernel: int = 3,
    stride: int = 1,
    padding: str | int = "same",
    activation: str = "relu",
    **extra: Any,
) -> LayerEntry:
    """A `conv` layer entry; `extra` adds keys such as `use_bias` or `name`."""
    return {
        "type": "conv",
        "features": features,
        "kernel": kernel,
        "stride": stride,
        "padding": padding,
        "activation": activation,
        **extra,
    }
