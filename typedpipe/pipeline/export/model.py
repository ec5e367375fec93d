"""`ExportedModel`: a trained classifier loaded back from its bundle.

It refuses a contract of a version it cannot read (`bundle.version`) and a file
that differs from its checksum (`bundle.corrupt`), and checks every input against
the contract, so a wrong image is a diagnostic, not a wrong answer.
"""

import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import SingleDeviceSharding

from typedpipe.contracts import ContractError, Diagnostic, ImageSpec
from typedpipe.memory import HEADROOM, budget, device_memory, exceeds, over_budget
from typedpipe.models import split_params
from typedpipe.pipeline.check.preflight import compiled_bytes
from typedpipe.pipeline.export import inputs
from typedpipe.pipeline.export.contract import (
    RETRAIN,
    WEIGHTS,
    bundle_fault,
    contract_fields,
    read_contract,
)
from typedpipe.pipeline.export.write import Weights, eval_model, forward
from typedpipe.pipeline.stages import Preprocess
from typedpipe.pipeline.train.losses import loss_for

#: Images `predict` and `evaluate` run at once by default.
BATCH = 256


class ExportedModel:
    """A trained classifier loaded from its bundle, its contract and checksums checked.

    Example (one training step on the built-in default, then its bundle loaded back):
        >>> import tempfile, numpy as np
        >>> from typedpipe import default_config_path, load_config, train_run
        >>> run = tempfile.mkdtemp()
        >>> _ = train_run(load_config(default_config_path()), run, max_steps=1)
        >>> model = ExportedModel(f"{run}/model")
        >>> model.predict(np.zeros((5, 8, 8, 1), np.uint8)).shape  # images as stored
        (5, 10)

    Raises:
        ContractError: `bundle.version` or `bundle.corrupt` (see `read_contract`).
    """

    def __init__(self, directory: str | Path):
        directory = Path(directory)
        self.directory = directory
        self.contract = read_contract(directory)
        fields = contract_fields(self.contract, directory)
        self.config, self.spec = fields.config, fields.spec
        self.class_names, self.platforms = fields.class_names, fields.platforms
        graph, params, rest = split_params(eval_model(self.config))
        weights = {"params": params, "rest": rest}
        _refuse_large_weights(weights, directory)
        here = SingleDeviceSharding(jax.devices()[0])
        target = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=here), weights
        )
        import orbax.checkpoint as ocp

        try:
            with ocp.StandardCheckpointer() as checkpointer:
                self._weights = checkpointer.restore((directory / WEIGHTS).absolute(), target)
        except Exception as err:  # weights that do not fit the contract's model
            raise bundle_fault(
                "bundle.corrupt",
                f"the weights of {directory} do not restore into the model its contract "
                f"describes: {type(err).__name__}",
                expected="weights written with the contract",
                got=_first_line(err),
                hint=RETRAIN,
                items=(str(directory / WEIGHTS),),
            ) from None
        logits = forward(graph, Preprocess(self.config.preprocess))
        self._logits = jax.jit(logits)
        self._probabilities = jax.jit(
            lambda weights, images: jax.nn.softmax(logits(weights, images), axis=-1)
        )
        self._compiled: dict[tuple[str, int], Any] = {}

    def _run(self, which: Literal["logits", "probabilities"], images: np.ndarray) -> jax.Array:
        """`which` on one batch, compiled once per batch size and refused (`memory.exceeds`)
        where the compiled program needs more memory than the device has."""
        key = (which, len(images))
        if key not in self._compiled:
            fn = self._logits if which == "logits" else self._probabilities
            abstract = jax.ShapeDtypeStruct(images.shape, images.dtype)
            compiled = fn.lower(self._weights, abstract).compile()
            need = compiled_bytes(compiled) or 0
            limit, where = device_memory()
            if need > limit * HEADROOM:
                fits = max(1, int(len(images) * limit * HEADROOM / need))
                raise ContractError(
                    exceeds(
                        "the model",
                        need,
                        limit,
                        where,
                        batch=f"for a batch of {len(images)} {self.spec.describe()} images",
                        stage="model bundle",
                        hint=f"pass fewer images at once (batch_size = {fits})"
                        if len(images) > 1
                        else "this model's input is too large for this device",
                    )
                )
            self._compiled[key] = compiled
        return self._compiled[key](self._weights, images)

    def check(self, images: np.ndarray) -> None:
        """Raise a ContractError unless `images` match the stored-image contract."""
        shape = tuple(images.shape)
        inputs.check_input(
            self.spec, shape, str(images.dtype), f"{images.dtype} {' '.join(map(str, shape))}"
        )

    def check_spec(self, spec: ImageSpec) -> None:
        """Raise a ContractError unless data of `spec` matches the contract: before any pixel."""
        shape = (0, spec.height, spec.width, spec.channels)
        inputs.check_input(self.spec, shape, spec.dtype, spec.describe(), what="the data")

    def predict(self, images: np.ndarray, batch_size: int = BATCH) -> np.ndarray:
        """Class probabilities `(n, num_classes)` for images as stored `(n, h, w, c)`."""
        self.check(images)
        if not len(images):
            return np.zeros((0, len(self.class_names)), np.float32)
        return np.concatenate(
            [
                np.asarray(self._run("probabilities", images[start : start + batch_size]))
                for start in range(0, len(images), batch_size)
            ]
        )

    def read_image(self, path: str | Path) -> np.ndarray:
        """One image file decoded to the contract (see `inputs.read_image`)."""
        return inputs.read_image(path, self.spec)

    def read_images(self, paths: Iterable[str | Path]) -> np.ndarray:
        """Image files decoded to the contract (see `inputs.read_images`)."""
        return inputs.read_images(paths, self.spec)

    def predict_files(
        self, paths: Iterable[str | Path], top: int = inputs.TOP
    ) -> tuple[list[inputs.Prediction], list[Diagnostic]]:
        """Predict image files and folders (see `inputs.predict_files`)."""
        return inputs.predict_files(self, paths, top)

    def class_ids(self, ids: np.ndarray, names: Sequence[str] = ()) -> np.ndarray:
        """The data's class ids as the model's: by name where the data names its classes.

        Raises:
            ContractError: `labels.range`, a class the model does not have.
        """
        ids = np.asarray(ids)
        if names and set(names) <= set(self.class_names):
            ours = np.array([self.class_names.index(n) for n in names], np.int32)
            return ours[ids]
        outside = np.flatnonzero((ids < 0) | (ids >= len(self.class_names)))
        if len(outside):
            raise ContractError(
                Diagnostic(
                    "labels.range",
                    f"{len(outside)} label(s) name a class the model does not have",
                    stage="labels",
                    expected=f"class ids in [0, {len(self.class_names)})",
                    got=f"ids from {int(ids.min())} to {int(ids.max())}",
                    hint="evaluate on data of the classes the model was trained on",
                    items=tuple(map(str, outside)),
                    total_items=len(outside),
                )
            )
        return ids.astype(np.int32)

    def evaluate(self, images: np.ndarray, class_ids: np.ndarray) -> dict[str, float | None]:
        """Accuracy and mean cross-entropy (the training loss) on `images` with their class ids."""
        self.check(images)
        loss = loss_for("int", len(self.class_names))
        correct, loss_sum = 0, 0.0
        for start in range(0, len(images), BATCH):
            logits = self._run("logits", images[start : start + BATCH])
            ids = jnp.asarray(class_ids[start : start + BATCH], jnp.int32)
            correct += int((logits.argmax(-1) == ids).sum())
            loss_sum += float(loss(logits, ids).sum())
        count = len(class_ids)
        return {
            "accuracy": correct / count if count else None,
            "loss": loss_sum / count if count else None,
            "images": count,
        }


def _refuse_large_weights(weights: Weights, directory: Path) -> None:
    """Weights that would not fit in host memory, refused before the restore allocates them."""
    need = sum(math.prod(x.shape) * x.dtype.itemsize for x in jax.tree.leaves(weights))
    if need > budget():
        raise ContractError(
            over_budget(
                f"the weights of the model bundle {directory}",
                need,
                "serve the model on a host with more memory, or train a smaller one",
                stage="model bundle",
            )
        )


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else type(err).__name__
