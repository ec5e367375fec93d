"""Weights from a file: a safetensors state dict or a typedpipe bundle, into a model's Variables.

A safetensors file is a PyTorch state dict as torchvision and timm save it. Each
layer says where its tensors go (`Layer.tensors()`: a `TensorMap` per tensor,
named relative to the layer's `name`), so the file a model needs is known from
an abstract model (`expected_tensors`): names, shapes in PyTorch's layout,
dtypes. The file's header (`read_index`) is held against it before any tensor is
read: every tensor is accounted for, and what does not fit is one
`weights.mismatch` naming each tensor. When only the logits layer's tensors
differ, in the class axis alone, the head is new (left as initialised) and
everything else is loaded.

A typedpipe bundle folder (`runs/<name>/model`) is a warm start: its Orbax
weights, held against the model's own Variables path by path.

Pickles (`.pth`, `.pt`, `.bin`, `.ckpt`) are refused before they are opened:
unpickling runs code from the file. The hint is the conversion to safetensors.

Modules: `layouts` (the translations), `weightplan` (what a model needs),
`weightfit` (the comparison and its diagnostics), `weightfiles` (the formats).
"""

import dataclasses
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from typedpipe.contracts import ConfigError, ContractError, Diagnostic
from typedpipe.models.classifier import Classifier
from typedpipe.models.layouts import TensorMap as TensorMap
from typedpipe.models.weightfiles import STAGE, read_tensors
from typedpipe.models.weightfiles import read_index as read_index
from typedpipe.models.weightfit import Comparison as Comparison
from typedpipe.models.weightfit import compare as compare
from typedpipe.models.weightfit import mismatch, new_head
from typedpipe.models.weightplan import IGNORED as IGNORED
from typedpipe.models.weightplan import Target, VariablePath, plan_for, variable
from typedpipe.models.weightplan import expected_tensors as expected_tensors
from typedpipe.models.weightplan import plan as plan


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Loaded:
    """Arrays read from a file, translated, each for the Variable at `paths[i]`: a pytree
    (the arrays are its leaves), so it can be an argument of a jitted init."""

    paths: tuple[VariablePath, ...] = dataclasses.field(metadata={"static": True})
    arrays: tuple[Any, ...]


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
        >>> from typedpipe.models import build_model
        >>> abstract = nnx.eval_shape(lambda: build_model("small_cnn", (8, 8, 1), 10,
        ...                                               rngs=nnx.Rngs(0)))
        >>> [d.code for d in weights_diagnostics(abstract, "resnet18.pth")]
        ['weights.format']
    """
    try:
        comparison = inspect_weights(model, path)
    except (ContractError, ConfigError) as err:
        return list(err.diagnostics)
    if not comparison.fits:
        return [mismatch(comparison, str(path), what, len(plan_for(model, path)))]
    if comparison.new_head:
        return [new_head(comparison, path)]
    return []


def read_weights(model: Classifier, path: str | Path, what: str = "the model") -> Loaded:
    """The tensors of `path` that `model` takes, translated to its layouts and dtypes.

    The header is compared first: nothing is read unless every tensor fits (or only
    the head differs, which is then left out).

    Raises:
        ContractError: `weights.mismatch`, `weights.missing`, `weights.format`,
            `weights.corrupt`; `value.nonfinite`, tensors holding NaN or inf (found
            once their data is read: `check` reads headers only).
    """
    planned = plan_for(model, path)
    comparison = compare(model, planned, read_index(path))
    if not comparison.fits:
        raise ContractError(mismatch(comparison, str(path), what, len(planned)))
    names = [n for n in planned if n not in comparison.skipped]
    arrays = read_tensors(path, names)
    nonfinite = [n for n in names if not np.isfinite(arrays[n]).all()]
    if nonfinite:
        raise ContractError(_nonfinite(path, nonfinite))
    paths, values = [], []
    for name in names:
        for target in planned[name].targets:
            paths.append(target.path)
            values.append(_translate(arrays[name], target))
    return Loaded(tuple(paths), tuple(values))


def _nonfinite(path: str | Path, names: list[str]) -> Diagnostic:
    return Diagnostic(
        "value.nonfinite",
        f"{len(names)} tensor(s) of {path} hold NaN or inf: a model started from them computes NaN",
        stage=STAGE,
        expected="finite weights",
        got="NaN/inf",
        hint="export the weights again from a model that trained without diverging, or "
        "remove weights under [model] to start from random weights",
        items=tuple(names),
    )


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
    """Put each of `loaded`'s arrays into its Variable of `model` (jit-safe: traced arrays
    stay traced, host arrays become device arrays)."""
    for path, value in zip(loaded.paths, loaded.arrays, strict=True):
        variable(model, path).set_value(jnp.asarray(value))


def load_weights(model: Classifier, path: str | Path, what: str = "the model") -> Classifier:
    """Fill `model`'s Variables from a safetensors file or a bundle; return it.

    Raises:
        ContractError: see `read_weights`.

    Example: a state dict of zeros, saved as PyTorch names and shapes it, loaded.
        >>> import tempfile, safetensors.numpy
        >>> from typedpipe.models import build_model
        >>> model = build_model("small_cnn", (8, 8, 1), 10, rngs=nnx.Rngs(0))
        >>> state = {name: np.zeros(shape, np.float32)
        ...          for name, (shape, _) in expected_tensors(model).items()}
        >>> path = f"{tempfile.mkdtemp()}/small_cnn.safetensors"
        >>> safetensors.numpy.save_file(state, path)
        >>> float(load_weights(model, path).layers[0].conv.kernel[...].sum())
        0.0
    """
    assign(model, read_weights(model, path, what))
    return model
