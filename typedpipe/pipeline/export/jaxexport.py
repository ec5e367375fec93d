"""The `jax.export` artifact: the whole inference function, serialized with its weights.

Serving it needs jax and numpy, nothing else:
`jax.export.deserialize(bytearray(data)).call(images)` on a batch of any size.
"""

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax

from typedpipe.files import write_atomic
from typedpipe.pipeline.export.artifacts import Inference

FILE = "model.jaxexport"

#: The platforms the artifact is lowered for. Lowering needs no accelerator, so a
#: model trained on a laptop is served on a GPU or TPU as it is; where a platform
#: cannot be lowered for, the artifact falls back to the CPU alone.
PLATFORMS = ("cpu", "cuda", "tpu")


def write_jaxexport(inference: Inference, path: Path) -> dict[str, Any]:
    """Export `inference` for a symbolic batch size and write it to `path`.

    Returns:
        The contract section: the file, the platforms it was lowered for, its input
        and output shapes (`"b"` for the batch), and the jax that wrote it.
    """
    exported = _export(inference)
    write_atomic(path, bytes(exported.serialize()))
    return {
        "file": path.name,
        "platforms": list(exported.platforms),
        "input": _aval_json(exported.in_avals[0]),
        "output": _aval_json(exported.out_avals[0]),
        "jax": jax.__version__,
        "calling_convention_version": exported.calling_convention_version,
    }


def _export(inference: Inference) -> jax.export.Exported:
    """The function for a batch of any size, lowered for its platforms, else for the CPU."""
    spec = inference.spec
    (batch,) = jax.export.symbolic_shape("b")
    images = jax.ShapeDtypeStruct((batch, spec.height, spec.width, spec.channels), spec.dtype)
    function = jax.jit(inference.probabilities)
    platforms: Sequence[str] = inference.platforms
    try:
        return jax.export.export(function, platforms=tuple(platforms))(images)
    except Exception:  # a platform without lowering rules for some op: the CPU alone
        if tuple(platforms) == ("cpu",):
            raise
        return jax.export.export(function, platforms=("cpu",))(images)


def _aval_json(aval) -> dict[str, Any]:
    """A shape with a symbolic batch as JSON: `{"shape": ["b", 8, 8, 1], "dtype": "uint8"}`."""
    return {
        "shape": [d if isinstance(d, int) else str(d) for d in aval.shape],
        "dtype": str(aval.dtype),
    }
