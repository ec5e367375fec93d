"""A weights file's index held against a model's plan: what does not fit, and a new head.

Everything here reads names, shapes and dtypes only: it decides before any
tensor is read. A file that does not fit is one `weights.mismatch` listing every
tensor; when only the logits layer's tensors differ, in the class axis alone,
the head is new and the rest is loaded.
"""

import dataclasses
import math
from pathlib import Path

from typedpipe.contracts import Diagnostic
from typedpipe.contracts.specs import MAX_CLASSES
from typedpipe.models.classifier import Classifier, logits_layer
from typedpipe.models.weightfiles import STAGE
from typedpipe.models.weightplan import FLOATS, Index, Planned, Shape, ignored, unmapped

# The most elements a tensor ignored by rule (`IGNORED`) may have.
_TINY = 16


@dataclasses.dataclass(frozen=True)
class Comparison:
    """A file's tensors against a model's: what does not fit, and whether the head is new."""

    missing: tuple[str, ...] = ()  # needed, not in the file
    unused: tuple[str, ...] = ()  # in the file, no place in the model
    misshapen: tuple[str, ...] = ()  # in both, another shape or a non-float dtype
    unmapped: tuple[str, ...] = ()  # Variables of the model no layer maps to a file name
    new_head: str = ""  # the line saying so, when the head alone differs
    skipped: frozenset[str] = frozenset()  # file names not loaded (the new head's)
    lines: tuple[str, ...] = ()  # one per fault, for the diagnostic

    @property
    def fits(self) -> bool:
        return not (self.missing or self.unused or self.misshapen or self.unmapped)


def compare(model: Classifier, planned: dict[str, Planned], found: Index) -> Comparison:
    """`found` (a file's index) against `planned` (`plan(model)` or `bundle_plan(model)`), on
    names and shapes alone. Variables no layer maps count as missing."""
    orphans = unmapped(model, planned)
    missing = tuple(n for n in planned if n not in found)
    # An ignored tensor is a counter or an RNG key: one larger than that is no such thing.
    unused = tuple(
        n
        for n in found
        if n not in planned and not (ignored(n) and math.prod(found[n][0]) <= _TINY)
    )
    misshapen = tuple(
        n for n, p in planned.items() if n in found and not _fits(p.shape, p.dtype, *found[n])
    )
    lines = (
        *orphans,
        *(f"missing {n} {_dims(planned[n].shape)}" for n in missing),
        *(f"unused {n} {_dims(found[n][0])} {found[n][1]}" for n in unused),
        *(
            f"shape {n}: the model needs {_dims(planned[n].shape)} {planned[n].dtype}, "
            f"the file has {_dims(found[n][0])} {found[n][1]}"
            for n in misshapen
        ),
    )
    comparison = Comparison(missing, unused, misshapen, orphans, lines=lines)
    head = _head_line(model, planned, found, misshapen) if misshapen else ""
    if head and not missing and not unused and not orphans:
        return Comparison(new_head=head, skipped=frozenset(misshapen))
    return comparison


def _fits(shape: Shape, dtype: str, file_shape: Shape, file_dtype: str) -> bool:
    same_kind = file_dtype == dtype or (file_dtype in FLOATS and dtype in FLOATS)
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
    # A class count no model could have is no head (and would be a huge read).
    if len(classes) != 1 or max(classes) > MAX_CLASSES:
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
            (comparison.unmapped, "with no PyTorch name"),
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
    if c.unmapped:
        return (
            "a layer names no PyTorch tensor for some of its weights: give its class a "
            "tensors() method (see typedpipe.models.weights.TensorMap), or start from a "
            'typedpipe bundle (weights = "runs/<name>/model" under [model])'
        )
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
