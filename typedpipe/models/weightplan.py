"""What a model needs from a weights file: each tensor's name, shape and dtype there, and
the Variables it fills.

`plan` walks the model's layers (abstract or not) and their `tensors()`: a
safetensors file's names are the layer's `name` + "." + the map's `source` (the
layer's name alone for a source of "", such as a ViT's class token), its shapes
PyTorch's (each layout's inverse shape rule). `bundle_plan` is the same for a
typedpipe bundle, whose tensors are the model's own Variables by path.
"""

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
from flax import nnx

from typedpipe.contracts import ConfigError, Diagnostic
from typedpipe.contracts.diagnostics import config_value
from typedpipe.models.classifier import Classifier
from typedpipe.models.layouts import Layout, layout_named, linear_after_flatten
from typedpipe.models.weightfiles import Index, Shape, dtype_code, is_bundle

VariablePath = tuple[str | int, ...]

#: Tensors of a file that are never weights, ignored wherever they appear: batch norm's
#: step counter (PyTorch), and a bundle's dropout RNG state (the run's, not the model's).
IGNORED = ("num_batches_tracked", ".rngs.count", ".rngs.key")

#: The float dtypes a file may hold for a float Variable: each is converted to its dtype.
FLOATS = ("F16", "BF16", "F32", "F64")


@dataclasses.dataclass(frozen=True)
class Target:
    """One Variable a file tensor fills: where, how, and as what."""

    path: VariablePath  # from the model: ("layers", 3, "conv", "kernel")
    layout: Layout
    shape: Shape  # ours
    dtype: np.dtype
    part: tuple[int, int] = (0, 1)


@dataclasses.dataclass(frozen=True)
class Planned:
    """One tensor the model needs from the file: its name, its shape there, its Variables."""

    name: str
    shape: Shape
    dtype: str
    layer: int  # index into `Classifier.layers`
    targets: tuple[Target, ...]


def variable(model: nnx.Module, path: VariablePath) -> nnx.Variable:
    """The Variable at `path` (attribute names and list indices) inside `model`."""
    node: Any = model
    for step in path:
        node = node[step] if isinstance(step, int) else getattr(node, step)
    if not isinstance(node, nnx.Variable):
        raise TypeError(f"{'.'.join(map(str, path))} is a {type(node).__name__}, not a Variable")
    return node


def plan(model: Classifier) -> dict[str, Planned]:
    """Every tensor a safetensors file must hold for `model` (abstract or not), by file name.

    Raises:
        ConfigError: two layers share a name, so their tensors' names collide.
        ValueError: a layer's `tensors()` names a missing Variable, or maps of one
            source disagree on its shape or leave part of it out (a programming
            error in the layer).
    """
    planned: dict[str, Planned] = {}
    shape: Shape = (model.height, model.width, model.channels)
    flattened: Shape | None = None  # the map a flatten layer just turned into features
    for index, layer in enumerate(model.layers):
        grouped: dict[str, list[Target]] = {}
        for m in layer.tensors():
            var = variable(layer, m.target)
            ours = tuple(var.shape)
            layout = layout_named(m.layout)
            if m.layout == "linear" and flattened is not None:
                layout = linear_after_flatten(*flattened)
            target = Target(("layers", index, *m.target), layout, ours, np.dtype(var.dtype), m.part)
            name = f"{layer.name}.{m.source}" if m.source else layer.name
            grouped.setdefault(name, []).append(target)
        for name, targets in grouped.items():
            if name in planned:
                raise ConfigError(_same_name(model, planned[name].layer, index))
            shapes = {_file_shape(t) for t in targets}
            parts = sorted(t.part for t in targets)
            if len(shapes) != 1 or parts != [(i, parts[0][1]) for i in range(parts[0][1])]:
                raise ValueError(f"{layer.name}: the maps of {name} disagree on it: {parts}")
            planned[name] = Planned(
                name, shapes.pop(), dtype_code(targets[0].dtype), index, tuple(targets)
            )
        if layer.kind == "flatten" and len(shape) == 3 and shape[0] * shape[1] > 1:
            flattened = shape
        elif grouped:
            flattened = None
        shape = layer.output_shape(shape)
    return planned


def _same_name(model: Classifier, first: int, second: int) -> Diagnostic:
    name = model.layers[second].name
    where = f"[model] layers[{second}] ({model.layers[second].kind})"
    return config_value(
        f"layers {first} and {second} are both named {name!r}: a weights file names its "
        "tensors after the layers, so each name must be unique",
        stage="[model] layers",
        expected="a unique name per layer",
        got=f"name = {name!r} twice",
        hint=f'name = "{name}_{second}" in {where}',
    )


def _file_shape(target: Target) -> Shape:
    shape = target.layout.file_shape(target.shape)
    _, count = target.part
    return (shape[0] * count, *shape[1:]) if count > 1 else shape


def expected_tensors(model: Classifier) -> Index:
    """The tensors a safetensors file must hold for `model`: name -> (shape, dtype code).

    Example:
        >>> from typedpipe.models import build_model
        >>> abstract = nnx.eval_shape(lambda: build_model("small_cnn", (8, 8, 1), 10,
        ...                                               rngs=nnx.Rngs(0)))
        >>> expected_tensors(abstract)["conv0.weight"]
        ((32, 1, 3, 3), 'F32')
    """
    return {name: (p.shape, p.dtype) for name, p in plan(model).items()}


def ignored(name: str) -> bool:
    """Whether a file's tensor is never a weight (`IGNORED`)."""
    return name.endswith(IGNORED)


def unmapped(model: Classifier, planned: dict[str, Planned]) -> tuple[str, ...]:
    """The model's weights and batch statistics that no layer's `tensors()` maps (a layer
    registered without them): no file can fill them, so they are never left random quietly."""
    filled = {t.path for p in planned.values() for t in p.targets}
    kept = nnx.state(model, nnx.Any(nnx.Param, nnx.BatchStat))
    found = []
    for keys, var in nnx.to_flat_state(kept):
        path = tuple(k if isinstance(k, int) else str(k) for k in keys)
        if path not in filled:
            layer = model.layers[int(path[1])]
            found.append(
                f"unmapped {'.'.join(map(str, path))} {'x'.join(map(str, var.shape))}: "
                f"layer {layer.name} ({layer.kind}) names no PyTorch tensor for it"
            )
    return tuple(found)


def bundle_plan(model: Classifier) -> dict[str, Planned]:
    """What a bundle must hold for `model`: its own weights and batch statistics, by path
    (`layers.0.conv.kernel`), as typedpipe stores them."""
    planned = {}
    kept = nnx.state(model, nnx.Any(nnx.Param, nnx.BatchStat))
    for keys, var in nnx.to_flat_state(kept):
        path: VariablePath = tuple(k if isinstance(k, int) else str(k) for k in keys)
        name = ".".join(map(str, path))
        shape, dtype = tuple(var.shape), np.dtype(var.dtype)
        target = Target(path, layout_named("identity"), shape, dtype)
        planned[name] = Planned(name, shape, dtype_code(dtype), int(path[1]), (target,))
    return planned


def plan_for(model: Classifier, path: str | Path) -> dict[str, Planned]:
    """`bundle_plan` for a bundle folder, `plan` for a file."""
    return bundle_plan(model) if is_bundle(Path(path)) else plan(model)
