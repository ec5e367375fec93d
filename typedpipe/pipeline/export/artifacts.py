"""Artifact formats: serialized forms of the inference function that a bundle carries.

An artifact is one file of the bundle, written by one function from the
`Inference` (stored images in, class probabilities out, the weights closed over).
Its contract section says how to serve it. `jaxexport` is the one typedpipe writes
today; another format (ONNX, say) is one module with a writer and one
`ARTIFACTS.register` line in `typedpipe/pipeline/export/__init__.py`.
"""

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax

from typedpipe.contracts import ImageSpec
from typedpipe.registry import Registry


@dataclasses.dataclass(frozen=True)
class Inference:
    """What every artifact serializes: one function and the images it accepts.

    Attributes:
        probabilities: `(b, h, w, c) stored images -> (b, num_classes)` probabilities,
            preprocessing included, weights closed over as constants.
        spec: the stored-image spec `probabilities` accepts (any batch size).
        platforms: where the artifact should run (lowering needs no accelerator).
    """

    probabilities: Callable[[jax.Array], jax.Array]
    spec: ImageSpec
    platforms: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Artifact:
    """An artifact format: the file it writes, and its writer.

    `write(inference, path)` writes the file at `path` atomically and returns the
    contract section that describes it (its `file` included).
    """

    file: str
    write: Callable[[Inference, Path], dict[str, Any]]


#: Every artifact format a bundle is written with, by name.
ARTIFACTS: Registry[Artifact] = Registry("artifact format", key="format", table="export")

#: The artifact whose section is the contract's `artifact` (what `ExportedModel` checks
#: platforms against, and what bundles of version 2 carried alone).
PRIMARY = "jaxexport"
