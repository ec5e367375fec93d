"""Weights from a file: a safetensors state dict or a typedpipe bundle, into a model's Variables.

A safetensors file is a PyTorch state dict as torchvision and timm save it. Each
layer says where its tensors go (`Layer.tensors()`: a `TensorMap` per tensor,
named relative to the layer's `name`), so the file a model needs is known from
an abstract model (`nnx.eval_shape`): names, shapes in PyTorch's layout, dtypes.
The file's header is held against it before any tensor is read: every tensor is
accounted for, and what does not fit is one `weights.mismatch` naming each
tensor. When only the logits layer's tensors differ, in the class axis alone,
the head is new (left as initialised) and everything else is loaded.

A typedpipe bundle folder (`runs/<name>/model`) is a warm start: its Orbax
weights, held against the model's own Variables path by path.

Pickles (`.pth`, `.pt`, `.bin`, `.ckpt`) are refused before they are opened:
unpickling runs code from the file. The hint is the conversion to safetensors.
"""

import dataclasses
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import nnx

from typedpipe.contracts import ContractError, Diagnostic
from typedpipe.models.classifier import Classifier, logits_layer
from typedpipe.models.layouts import LAYOUTS, Layout, linear_after_flatten
from typedpipe.models.layouts import TensorMap as TensorMap  # re-exported: the API is here
from typedpipe.models.weightfiles import STAGE, is_bundle, read_tensors
from typedpipe.models.weightfiles import read_index as read_index

Shape = tuple[int, ...]
VariablePath = tuple[str | int, ...]
#: Tensor name -> (shape, safetensors dtype code such as "F32").
Index = dict[str, tuple[Shape, str]]

#: Tensors of a file that are never weights, ignored wherever they appear: batch norm's
#: step counter (PyTorch), and a bundle's dropout RNG state (the run's, not the model's).
IGNORED = ("num_batches_tracked", ".rngs.count", ".rngs.key")

_FLOATS = ("F16", "BF16", "F32", "F64")
_CODES = {
    "float16": "F16",
    "bfloat16": "BF16",
    "float32": "F32",
    "float64": "F64",
    "int8": "I8",
    "int16": "I16",
    "int32": "I32",
    "int64": "I64",
    "uint8": "U8",
    "uint32": "U32",
    "bool": "BOOL",
}


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


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Loaded:
    """Arrays read from a file, translated, each for the Variable at `paths[i]`: a pytree
    (the arrays are its leaves), so it can be an argument of a jitted init."""

    paths: tuple[VariablePath, ...] = dataclasses.field(metadata={"static": True})
    arrays: tuple[Any, ...]


def dtype_code(dtype: Any) -> str:
    """The safetensors code of a dtype: `float32` -> `F32`."""
    name = np.dtype(dtype).name
    return _CODES.get(name, name.upper())


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
        ValueError: a layer's `tensors()` names a missing Variable, or maps of one
            source disagree on its shape (a programming error in the layer).
    """
    planned: dict[str, Planned] = {}
    shape: Shape = (model.height, model.width, model.channels)
    flattened: Shape | None = None  # the map a flatten layer just turned into features
    for index, layer in enumerate(model.layers):
        grouped: dict[str, list[Target]] = {}
        for m in layer.tensors():
            var = variable(layer, m.target)
            ours = tuple(var.shape)
            layout = LAYOUTS.get(m.layout)
            if m.layout == "linear" and flattened is not None:
                layout = linear_after_flatten(*flattened)
            target = Target(("layers", index, *m.target), layout, ours, np.dtype(var.dtype), m.part)
            name = f"{layer.name}.{m.source}" if m.source else layer.name
            grouped.setdefault(name, []).append(target)
        for name, targets in grouped.items():
            shapes = {_file_shape(t) for t in targets}
            if len(shapes) != 1 or name in planned:
                raise ValueError(f"{layer.name}: the maps of {name} disagree on it: {shapes}")
            planned[name] = Planned(
                name, shapes.pop(), dtype_code(targets[0].dtype), index, tuple(targets)
            )
        if layer.kind == "flatten" and len(shape) == 3 and shape[0] * shape[1] > 1:
            flattened = shape
        elif grouped:
            flattened = None
        shape = layer.output_shape(shape)
    return planned


def _file_shape(target: Target) -> Shape:
    shape = target.layout.file_shape(target.shape)
    _, count = target.part
    return (shape[0] * count, *shape[1:]) if count > 1 else shape


def expected_tensors(model: Classifier) -> Index:
    """The tensors a safetensors file must hold for `model`: name -> (shape, dtype code).

    Example:
        >>> abstract = nnx.eval_shape(lambda: build_model("small_cnn", (8, 8, 1), 10,
        ...                                               rngs=nnx.Rngs(0)))
        >>> expected_tensors(abstract)["conv0.weight"]
        ((32, 1, 3, 3), 'F32')
    """
    return {name: (p.shape, p.dtype) for name, p in plan(model).items()}


def ignored(name: str) -> bool:
    """Whether a file's tensor is never a weight (`IGNORED`)."""
    return name.endswith(IGNORED)


@dataclasses.dataclass(frozen=True)
class Comparison:
    """A file's tensors against a model's: what does not fit, and whether the head is new."""

    missing: tuple[str, ...] = ()  # needed, not in the file
    unused: tuple[str, ...] = ()  # in the file, no place in the model
    misshapen: tuple[str, ...] = ()  # in both, another shape or a non-float dtype
    new_head: str = ""  # the line saying so, when the head alone differs
    skipped: frozenset[str] = frozenset()  # file names not loaded (the new head's)
    lines: tuple[str, ...] = ()  # one per fault, for the diagnostic

    @property
    def fits(self) -> bool:
        return not (self.missing or self.unused or self.misshapen)


def compare(model: Classifier, planned: dict[str, Planned], found: Index) -> Comparison:
    """`found` (a file's index) against `planned` (`plan(model)`), on names and shapes alone."""
    missing = tuple(n for n in planned if n not in found)
    unused = tuple(n for n in found if n not in planned and not ignored(n))
    misshapen = tuple(
        n for n, p in planned.items() if n in found and not _fits(p.shape, p.dtype, *found[n])
    )
    lines = (
        *(f"missing {n} {_dims(planned[n].shape)}" for n in missing),
        *(f"unused {n} {_dims(found[n][0])} {found[n][1]}" for n in unused),
        *(
            f"shape {n}: the model needs {_dims(planned[n].shape)} {planned[n].dtype}, "
            f"the file has {_dims(found[n][0])} {found[n][1]}"
            for n in misshapen
        ),
    )
    comparison = Comparison(missing, unused, misshapen, lines=lines)
    head = _head_line(model, planned, found, misshapen) if misshapen else ""
    if head and not missing and not unused:
        return Comparison(new_head=head, skipped=frozenset(misshapen))
    return comparison


def _fits(shape: Shape, dtype: str, file_shape: Shape, file_dtype: str) -> bool:
    same_kind = file_dtype == dtype or (file_dtype in _FLOATS and dtype in _FLOATS)
    return tuple(file_shape) == tuple(shape) and same_kind


def _head_line(
    model: Classifier, planned: dict[str, Planned], found: Index, misshapen: tuple[str, ...]
) -> str:
    """The new-head line when every misshapen tensor is the logits layer's, differing only
    in the class axis; "" otherwise."""
    index = logits_layer([{"type": layer.kind} for layer in model.layers])
    if index is None:  # a head of the zoo's own: the last layer that holds weights
        index = max(p.layer for p in planned.values())
    classes = set()
    for name in misshapen:
        ours, (theirs, dtype) = planned[name], found[name]
        differ = [a for a, (x, y) in enumerate(zip(ours.shape, theirs, strict=False)) if x != y]
        if (
            ours.layer != index
            or len(ours.shape) != len(theirs)
            or not _fits(ours.shape, ours.dtype, ours.shape, dtype)
            or len(differ) != 1
            or ours.shape[differ[0]] != model.num_classes
        ):
            return ""
        classes.add(theirs[differ[0]])
    if len(classes) != 1:
        return ""
    name = model.layers[index].name
    return (
        f"head {name}: new, {model.num_classes} classes (the file has {classes.pop()}); "
        "every other tensor loaded"
    )


def _dims(shape: Shape) -> str:
    return "x".join(map(str, shape)) if shape else "scalar"


def mismatch(comparison: Comparison, where: str, what: str, total: int) -> Diagnostic:
    """The one `weights.mismatch` of a file that does not fit: each tensor, with shapes."""
    counts = [
        f"{len(names)} {word}"
        for names, word in (
            (comparison.missing, "missing"),
            (comparison.unused, "unused"),
            (comparison.misshapen, "of another shape"),
        )
        if names
    ]
    faults = len(comparison.lines)
    return Diagnostic(
        "weights.mismatch",
        f"{where} does not fit {what}: {faults} tensor(s) do not fit ({', '.join(counts)})",
        stage=STAGE,
        expected=f"the {total} tensors of {what}, in PyTorch's names and shapes",
        got=", ".join(counts),
        hint=_mismatch_hint(comparison),
        items=comparison.lines,
    )


def _mismatch_hint(c: Comparison) -> str:
    prefix = _common_prefix(c.unused, c.missing)
    if prefix:
        return (
            f"the file's names carry the prefix {prefix!r}: save the state dict without it "
            f"({{k.removeprefix({prefix!r}): v for k, v in state_dict.items()}})"
        )
    if c.missing and not c.unused and not c.misshapen:
        return (
            "save the whole state_dict() of the model (this file lacks part of it), or set "
            'name = "..." under [model] to the architecture the file was saved from'
        )
    return (
        'set name = "..." (and input, num_classes, layers) under [model] to the model the file '
        "was saved from"
    )


def _common_prefix(unused: tuple[str, ...], missing: tuple[str, ...]) -> str:
    """A prefix that every unused name has and that turns them into the missing ones
    (`module.` from DataParallel, `model.`, `backbone.`); "" when there is none."""
    if not unused or len(unused) != len(missing):
        return ""
    first = unused[0]
    for cut in range(1, len(first)):
        prefix = first[:cut]
        if (
            prefix.endswith(".")
            and all(n.startswith(prefix) for n in unused)
            and {n.removeprefix(prefix) for n in unused} == set(missing)
        ):
            return prefix
    return ""


def bundle_plan(model: Classifier) -> dict[str, Planned]:
    """What a bundle must hold for `model`: its own weights and batch statistics, by path
    (`layers.0.conv.kernel`), as typedpipe stores them."""
    planned = {}
    kept = nnx.state(model, nnx.Any(nnx.Param, nnx.BatchStat))
    for keys, var in nnx.to_flat_state(kept):
        path: VariablePath = tuple(k if isinstance(k, int) else str(k) for k in keys)
        name = ".".join(map(str, path))
        shape, dtype = tuple(var.shape), np.dtype(var.dtype)
        target = Target(path, LAYOUTS.get("identity"), shape, dtype)
        planned[name] = Planned(name, shape, dtype_code(dtype), int(path[1]), (target,))
    return planned


def plan_for(model: Classifier, path: str | Path) -> dict[str, Planned]:
    """`bundle_plan` for a bundle folder, `plan` for a file."""
    return bundle_plan(model) if is_bundle(Path(path)) else plan(model)


def inspect_weights(model: Classifier, path: str | Path) -> Comparison:
    """The file or bundle at `path` against `model` (abstract or not), from its header alone.

    Raises:
        ContractError: `weights.missing`, `weights.format` or `weights.corrupt`.
    """
    return compare(model, plan_for(model, path), read_index(path))


def weights_diagnostics(
    model: Classifier, path: str | Path, what: str = "the model"
) -> list[Diagnostic]:
    """What `check` says of `[model] weights`: nothing when every tensor fits, one
    `weights.mismatch` when some do not, a `weights.new_head` note when only the head is new.

    Example:
        >>> [d.code for d in weights_diagnostics(abstract, "resnet18.safetensors")]
        ['weights.new_head']
    """
    try:
        comparison = inspect_weights(model, path)
    except ContractError as err:
        return list(err.diagnostics)
    if not comparison.fits:
        return [mismatch(comparison, str(path), what, len(plan_for(model, path)))]
    if comparison.new_head:
        return [new_head(comparison, path)]
    return []


def new_head(comparison: Comparison, path: str | Path) -> Diagnostic:
    """The note that the head starts new: fine-tuning to other classes, said once."""
    return Diagnostic(
        "weights.new_head",
        comparison.new_head,
        stage=STAGE,
        expected="the head's tensors for num_classes",
        got=f"{path}: another number of classes",
        hint="nothing to do when fine-tuning to new classes; to keep the file's head, set "
        "num_classes under [model] to the file's",
        severity="warning",
        items=tuple(sorted(comparison.skipped)),
    )


def read_weights(model: Classifier, path: str | Path, what: str = "the model") -> Loaded:
    """The tensors of `path` that `model` takes, translated to its layouts and dtypes.

    The header is compared first: nothing is read unless every tensor fits (or only
    the head differs, which is then left out).

    Raises:
        ContractError: `weights.mismatch`, `weights.missing`, `weights.format`,
            `weights.corrupt`.
    """
    planned = plan_for(model, path)
    comparison = compare(model, planned, read_index(path))
    if not comparison.fits:
        raise ContractError(mismatch(comparison, str(path), what, len(planned)))
    names = [n for n in planned if n not in comparison.skipped]
    arrays = read_tensors(path, names)
    paths, values = [], []
    for name in names:
        for target in planned[name].targets:
            paths.append(target.path)
            values.append(_translate(arrays[name], target))
    return Loaded(tuple(paths), tuple(values))


def _translate(array: np.ndarray, target: Target) -> np.ndarray:
    index, count = target.part
    if count > 1:
        size = array.shape[0] // count
        array = array[index * size : (index + 1) * size]
    # Explicitly to the Variable's dtype: float16 and bfloat16 files widen, float64 rounds.
    ours = np.asarray(target.layout.forward(array, target.shape), dtype=target.dtype)
    if ours.shape != target.shape:  # a layout that breaks its own shape rule
        raise ValueError(f"layout {target.layout.name} made {ours.shape}, not {target.shape}")
    return np.ascontiguousarray(ours)


def assign(model: nnx.Module, loaded: Loaded) -> None:
    """Put each of `loaded`'s arrays into its Variable of `model` (jit-safe)."""
    for path, value in zip(loaded.paths, loaded.arrays, strict=True):
        variable(model, path).set_value(value)


def load_weights(model: Classifier, path: str | Path, what: str = "the model") -> Classifier:
    """Fill `model`'s Variables from a safetensors file or a bundle; return it.

    Raises:
        ContractError: see `read_weights`.

    Example:
        >>> model = load_weights(build_model("small_cnn", (8, 8, 1), 10, rngs=nnx.Rngs(0)),
        ...                      "small_cnn.safetensors")
    """
    assign(model, read_weights(model, path, what))
    return model
