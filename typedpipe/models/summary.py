"""The shape flow of a model: every layer's output, parameters and FLOPs, without arrays."""

import dataclasses
import math

import jax
from flax import nnx

from typedpipe.models import Classifier


@dataclasses.dataclass(frozen=True)
class Row:
    """One line of the flow: a stage or a layer, what leaves it, and what it costs."""

    name: str
    kind: str
    output: str
    params: int = 0
    flops: int = 0

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def layer_rows(model: Classifier) -> list[Row]:
    """Per-layer output shape, parameter count and FLOPs (per image) of a (possibly
    abstract, `nnx.eval_shape`-built) model."""
    shape: tuple[int, ...] = (model.height, model.width, model.channels)
    rows = []
    for layer in model.layers:
        params = sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(nnx.state(layer, nnx.Param)))
        flops = layer.flops(shape)
        shape = layer.output_shape(shape)
        rows.append(Row(layer.name, layer.kind, "b " + " ".join(map(str, shape)), params, flops))
    return rows
