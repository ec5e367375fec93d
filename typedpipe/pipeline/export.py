"""The exported model: trained weights plus the input contract needed to use them.

A run folder's `model/` holds
- `contract.json`: the stored-image spec the model's preprocessing accepts
  (shape, dtype, value range), the class names, and the resolved config that
  rebuilds the model;
- `weights/`: an Orbax checkpoint of the parameters and batch statistics.

`ExportedModel` loads it back and checks every input against the contract, so a
wrong image is a diagnostic, not a wrong answer.
"""

import dataclasses
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import SingleDeviceSharding

from typedpipe.contracts import Accepts, ContractError, Diagnostic, ImageSpec, compare
from typedpipe.models import build_model, split_params
from typedpipe.pipeline.config import Config, parse_config
from typedpipe.pipeline.stages import Preprocess
from typedpipe.pipeline.train.callbacks import write_atomic
from typedpipe.pipeline.train.losses import loss_for

FORMAT = "typedpipe.model"
VERSION = 1


def export_model(
    directory: Path, config: Config, params, rest, spec: ImageSpec, class_names: tuple[str, ...]
) -> None:
    """Write the bundle: `contract.json` and the weights (Orbax)."""
    directory.mkdir(parents=True, exist_ok=True)
    contract = {
        "format": FORMAT,
        "version": VERSION,
        "input": dataclasses.asdict(spec),
        "class_names": list(class_names),
        "config": config.to_toml(),
    }
    write_atomic(directory / "contract.json", json.dumps(contract, indent=2) + "\n")
    import orbax.checkpoint as ocp

    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(
            (directory / "weights").absolute(), {"params": params, "rest": rest}, force=True
        )


class ExportedModel:
    """A trained classifier loaded from its bundle.

    Example:
        >>> model = ExportedModel("runs/digits-cnn/model")
        >>> model.predict(images).shape   # images as stored: uint8 (n, 8, 8, 1)
        (n, 10)
    """

    def __init__(self, directory: str | Path):
        directory = Path(directory)
        contract = json.loads((directory / "contract.json").read_text())
        if contract.get("format") != FORMAT:
            raise ValueError(f"{directory} is not a typedpipe model bundle")
        self.config = parse_config(contract["config"])
        spec = contract["input"]
        self.spec = ImageSpec(
            **{**spec, "value_range": spec["value_range"] and tuple(spec["value_range"])}
        )
        self.class_names = tuple(contract["class_names"])
        m = self.config.model
        abstract = nnx.eval_shape(
            lambda: build_model(m.name, m.input, m.num_classes, m.layers, rngs=nnx.Rngs(0))
        )
        abstract.eval()
        graph, params, rest = split_params(abstract)
        here = SingleDeviceSharding(jax.devices()[0])
        target = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=here),
            {"params": params, "rest": rest},
        )
        import orbax.checkpoint as ocp

        with ocp.StandardCheckpointer() as checkpointer:
            weights = checkpointer.restore((directory / "weights").absolute(), target)
        self._graph = graph
        self._weights = weights
        self._preprocess = Preprocess(self.config.preprocess)
        self._logits = jax.jit(self._forward)
        self._probabilities = jax.jit(
            lambda weights, images: jax.nn.softmax(self._forward(weights, images), axis=-1)
        )

    def _forward(self, weights, images):
        model = nnx.merge(self._graph, weights["params"], weights["rest"])
        return model(self._preprocess(images, train=False))

    def check(self, images: np.ndarray) -> None:
        """Raise a ContractError unless `images` match the stored-image contract."""
        want = self.spec
        accepts = Accepts(want.dtype, want.height, want.width, want.channels)
        found = compare(accepts, tuple(images.shape), str(images.dtype))
        if not found:
            return
        hints = {
            "shape.rank": "pass a batch: (n, height, width, channels)",
            "shape.layout": "pass channels-last images: images.transpose(0, 2, 3, 1)",
            "dtype.input": f"pass {want.dtype} pixels, as the model was trained on",
            "shape.spatial": f"resize the images to {want.height}x{want.width}",
            "shape.channels": f"convert the images to {want.channels} channel(s)",
        }
        raise ContractError(
            Diagnostic(
                mismatch.code,
                f"the images {mismatch.message}: they do not match the model's input contract",
                stage="input",
                expected=want.describe(),
                got=f"{images.dtype} {' '.join(map(str, images.shape))}",
                hint=hints[mismatch.code],
            )
            for mismatch in found
        )

    def predict(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Class probabilities `(n, num_classes)` for images as stored `(n, h, w, c)`."""
        self.check(images)
        return (
            np.concatenate(
                [
                    np.asarray(
                        self._probabilities(self._weights, images[start : start + batch_size])
                    )
                    for start in range(0, len(images), batch_size)
                ]
            )
            if len(images)
            else np.zeros((0, len(self.class_names)), np.float32)
        )

    def read_images(self, paths: list[Path]) -> np.ndarray:
        """Decode image files the way the model's data was stored: its channels and size.

        Raises:
            ContractError: `data.corrupt` naming every file that cannot be decoded.
        """
        from typedpipe.pipeline.sources.decode import decode

        mode = {1: "gray", 3: "rgb"}.get(self.spec.channels, "keep")
        size = (self.spec.height, self.spec.width)
        images, failed = [], []
        for path in paths:
            try:
                images.append(decode(Path(path), mode, size))
            except Exception as err:  # any decode failure is reported with the file
                failed.append(f"{path}: {type(err).__name__}: {err}")
        if failed:
            raise ContractError(
                Diagnostic(
                    "data.corrupt",
                    f"{len(failed)} image file(s) cannot be decoded",
                    stage="input",
                    expected="readable image files",
                    got="decode errors",
                    hint="pass PNG, JPEG, BMP, GIF, WebP or TIFF files",
                    items=tuple(failed),
                )
            )
        return np.stack(images)

    def evaluate(self, images: np.ndarray, class_ids: np.ndarray) -> dict[str, float | None]:
        """Accuracy and mean cross-entropy (the training loss) on `images` with their class ids."""
        self.check(images)
        loss = loss_for("int", len(self.class_names))
        correct, loss_sum = 0, 0.0
        for start in range(0, len(images), 256):
            logits = self._logits(self._weights, images[start : start + 256])
            ids = jnp.asarray(class_ids[start : start + 256], jnp.int32)
            correct += int((logits.argmax(-1) == ids).sum())
            loss_sum += float(loss(logits, ids).sum())
        count = len(class_ids)
        return {
            "accuracy": correct / count if count else None,
            "loss": loss_sum / count if count else None,
            "images": count,
        }
