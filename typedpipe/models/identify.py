"""Which registered architecture a weights file was saved from, told by its tensors alone.

`typedpipe init --weights FILE` writes a fine-tuning config for the file's own
network. The file names no architecture, but its tensors do: every zoo model is
built on shapes alone (nothing allocated) and held against the file's header; the
one whose every tensor fits, up to a new head, is the file's. Nothing is read but
the header.
"""

from collections.abc import Iterable, Iterator
from pathlib import Path

from flax import nnx

from typedpipe.contracts import ConfigError, ContractError
from typedpipe.models.classifier import build_model
from typedpipe.models.weightfiles import read_index
from typedpipe.models.weightfit import compare
from typedpipe.models.weightplan import plan
from typedpipe.models.zoo import MODELS

#: Architectures that are lists a config writes (`sequential`), not networks a file
#: can come from.
_NOT_FROM_FILES = frozenset({"sequential"})


def candidates() -> list[str]:
    """The registered models a file may have been saved from."""
    return [name for name in MODELS.names() if name not in _NOT_FROM_FILES]


def architectures_of(
    path: str | Path,
    input_shape: tuple[int, int, int],
    num_classes: int,
    names: Iterable[str] | None = None,
) -> Iterator[str]:
    """Each architecture (of `names`, default `candidates()`) whose tensors the file at
    `path` holds, at `input_shape`, with a head of `num_classes` (new where the file's
    differs).

    Raises:
        ContractError: the file cannot be read (`weights.missing`, `.format`, `.corrupt`).

    Example:
        >>> import tempfile, numpy as np
        >>> from safetensors.numpy import save_file
        >>> from typedpipe.models import build_model
        >>> from typedpipe.models.weightplan import expected_tensors
        >>> model = nnx.eval_shape(lambda: build_model("lenet", (32, 32, 1), 10, rngs=nnx.Rngs(0)))
        >>> file = f"{tempfile.mkdtemp()}/lenet.safetensors"
        >>> save_file({n: np.zeros(s, np.float32) for n, (s, _) in expected_tensors(model).items()},
        ...           file)
        >>> list(architectures_of(file, (32, 32, 1), 3))
        ['lenet']
    """
    found = read_index(path)
    present = set(found)
    for name in candidates() if names is None else names:
        try:
            model = nnx.eval_shape(
                lambda name=name: build_model(name, input_shape, num_classes, rngs=nnx.Rngs(0))
            )
        except (ConfigError, ContractError):  # not built for this input
            continue
        wanted = plan(model)
        if set(wanted) - present:  # a tensor the file lacks: not this one, cheaply
            continue
        if compare(model, wanted, found).fits:
            yield name
