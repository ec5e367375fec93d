"""Writing a bundle: the weights, one file per artifact format, then `contract.json`.

Every file is written whole or not at all, and `contract.json` last: a bundle
whose contract exists is complete, and the contract's checksums cover the rest.
"""

import dataclasses
import inspect
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import nnx

from typedpipe.contracts import ImageSpec
from typedpipe.files import write_atomic
from typedpipe.models import MODELS, Classifier, split_params, validate_entry
from typedpipe.models.layers import LAYERS
from typedpipe.pipeline.config import Config
from typedpipe.pipeline.export.artifacts import ARTIFACTS, PRIMARY, Inference
from typedpipe.pipeline.export.contract import (
    CONTRACT,
    FORMAT,
    VERSION,
    WEIGHTS,
    file_checksums,
)
from typedpipe.pipeline.export.jaxexport import PLATFORMS
from typedpipe.pipeline.stages import Preprocess

Weights = dict[str, nnx.State]


def export_model(
    directory: Path,
    config: Config,
    params: nnx.State,
    rest: nnx.State,
    spec: ImageSpec,
    class_names: tuple[str, ...],
    *,
    platforms: Sequence[str] = PLATFORMS,
) -> dict[str, Any] | None:
    """Write the bundle: the weights, every registered artifact, then `contract.json`.

    Args:
        directory: the bundle folder (a run folder's `model/`).
        config: the resolved config the model was trained with.
        params, rest: the trained parameters and the rest of the model state.
        spec: the stored-image spec of the training data: what the artifacts accept.
        class_names: one name per class, in class-id order.
        platforms: the platforms to lower the artifacts for.

    Several processes call this together: each saves its part of the weights, and
    the first writes the rest.

    Returns:
        The contract, as written to `contract.json` (None on the other processes).
    """
    directory = Path(directory)
    primary = jax.process_index() == 0
    if primary:
        directory.mkdir(parents=True, exist_ok=True)
        # A contract left from an earlier export would vouch for files being replaced.
        (directory / CONTRACT).unlink(missing_ok=True)
    import orbax.checkpoint as ocp

    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(
            (directory / WEIGHTS).absolute(), {"params": params, "rest": rest}, force=True
        )
    if not primary:
        return None
    weights = {"params": _local(params), "rest": _local(rest)}
    model = eval_model(config)
    graph = split_params(model)[0]
    inference = Inference(_probabilities(graph, config, weights), spec, tuple(platforms))
    sections = {
        name: ARTIFACTS.get(name).write(inference, directory / ARTIFACTS.get(name).file)
        for name in ARTIFACTS.names()
    }
    contract = {
        "format": FORMAT,
        "version": VERSION,
        "input": dataclasses.asdict(spec),
        "class_names": list(class_names),
        "preprocess": _preprocess_section(config, spec),
        "model": _model_section(config, model),
        "artifact": sections[PRIMARY],
        "artifacts": sections,
        "files": file_checksums(directory, tuple(s["file"] for s in sections.values())),
        "config": config.to_toml(),
    }
    write_atomic(directory / CONTRACT, json.dumps(contract, indent=2) + "\n")
    return contract


def eval_model(config: Config) -> Classifier:
    """The configured model in inference mode, built on shapes alone (no weights allocated)."""
    model = config.model.abstract()
    model.eval()  # batch statistics are read, dropout is off
    return model


def forward(
    graph: nnx.GraphDef, preprocess: Preprocess
) -> Callable[[Weights, jax.Array], jax.Array]:
    """`(weights, stored images) -> logits`: the preprocessing stages, then the model."""

    def logits(weights: Weights, images: jax.Array) -> jax.Array:
        model = nnx.merge(graph, weights["params"], weights["rest"])
        return model(preprocess(images, train=False))

    return logits


def _probabilities(
    graph: nnx.GraphDef, config: Config, weights: Weights
) -> Callable[[jax.Array], jax.Array]:
    """`stored images -> class probabilities`, the weights closed over as constants."""
    logits = forward(graph, Preprocess(config.preprocess))

    def probabilities(images: jax.Array) -> jax.Array:
        return jax.nn.softmax(logits(weights, images), axis=-1)

    return probabilities


def _local(state: nnx.State) -> nnx.State:
    """The state on one local device: a replicated array may span devices and processes."""

    def one(x):
        if isinstance(x, jax.Array) and x.is_fully_replicated:
            return x.addressable_data(0)
        return x

    return jax.tree.map(one, state)


def _preprocess_section(config: Config, spec: ImageSpec) -> list[dict[str, Any]]:
    """Each stage with its settings and the spec it hands on at inference."""
    section = []
    for stage in config.preprocess:
        entry = {"op": stage.op, **dataclasses.asdict(stage), "augmentation": stage.augmentation}
        acting = stage.at_inference()  # itself, its deterministic counterpart, or None
        if acting is None:
            entry["output"] = "skipped at inference"
        else:
            spec = acting.in_spec(spec)
            entry["output"] = spec.describe()
        section.append(entry)
    return section


def _model_section(config: Config, model: Classifier) -> dict[str, Any]:
    """The architecture as data: every layer with all its settings, output shape and size."""
    m = config.model
    entries = MODELS.get(m.name)(m.input, m.num_classes, m.layers)
    shape, layers = tuple(m.input), []
    for index, (entry, layer) in enumerate(zip(entries, model.layers, strict=True)):
        _, settings, _ = validate_entry(entry, index)
        kind = entry["type"]
        shape = layer.output_shape(shape)
        layers.append(
            {
                "type": kind,
                "name": settings.pop("name"),
                **_defaults(kind),
                **settings,
                "output": list(shape),
                "params": _size(nnx.state(layer, nnx.Param)),
            }
        )
    return {
        "name": m.name,
        "input": list(m.input),
        "input_range": list(m.input_range),
        "num_classes": m.num_classes,
        "layers": layers,
        "params": _size(nnx.state(model, nnx.Param)),
    }


def _defaults(kind: str) -> dict[str, Any]:
    """A layer type's config keys that have defaults, with them."""
    cls = LAYERS.get(kind)
    keys = cls.params()
    return {
        name: parameter.default
        for name, parameter in inspect.signature(cls.__init__).parameters.items()
        if name in keys and parameter.default is not inspect.Parameter.empty
    }


def _size(state: nnx.State) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state))
