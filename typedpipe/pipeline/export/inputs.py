"""Images for an exported model: files decoded to its contract, and arrays checked against it.

The contract is the stored-image spec the model was trained on. A file is decoded
to its channels and size; an array must already match it. Whatever does not is a
diagnostic naming the file (or the array's shape), never a wrong answer.
"""

import dataclasses
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from typedpipe.contracts import Accepts, ContractError, Diagnostic, ImageSpec, compare
from typedpipe.pipeline.sources.decode import pixel_limit
from typedpipe.pipeline.sources.walk import image_files

#: How many of the most likely classes a prediction lists.
TOP = 3

#: Image files `predict_files` decodes and predicts at once: host memory does not grow
#: with the number of files.
PREDICT_CHUNK = 256

# Each contract fault, and what the caller does about it.
_HINTS = {
    "shape.rank": "pass a batch: (n, height, width, channels)",
    "shape.layout": "pass channels-last images: images.transpose(0, 2, 3, 1)",
    "dtype.input": "pass {dtype} pixels, as the model was trained on",
    "shape.spatial": "resize the images to {height}x{width}",
    "shape.channels": "convert the images to {channels} channel(s)",
}


def check_input(
    spec: ImageSpec, shape: tuple[int, ...], dtype: str, got: str, what: str = "the images"
) -> None:
    """Raise a ContractError unless a batch of `shape` and `dtype` matches `spec`.

    Raises:
        ContractError: a `shape.*` or `dtype.input` diagnostic per fault, at stage "input".
    """
    accepts = Accepts(spec.dtype, spec.height, spec.width, spec.channels)
    found = compare(accepts, shape, dtype)
    if found:
        raise ContractError(
            Diagnostic(
                mismatch.code,
                f"{what} {mismatch.message}: they do not match the model's input contract",
                stage="input",
                expected=spec.describe(),
                got=got,
                hint=_HINTS[mismatch.code].format(**dataclasses.asdict(spec)),
            )
            for mismatch in found
        )


def read_image(path: str | Path, spec: ImageSpec) -> np.ndarray:
    """Decode one image file the way the model's data was stored: its channels and size.

    Raises:
        ContractError: `data.corrupt` naming the file, when it cannot be decoded;
            `data.too_large` when it declares more pixels than `check` accepts;
            `data.lossy` when its 16-bit pixels would saturate; a `shape.*` or
            `dtype.input` code when it decodes off the contract.
    """
    from typedpipe.pipeline.sources.decode import Lossy, TooLarge, decode

    mode = {1: "gray", 3: "rgb"}.get(spec.channels, "keep")
    try:
        image = decode(Path(path), mode, (spec.height, spec.width))
    except TooLarge as err:  # the limit check and training apply, before any decode
        raise _file_fault(
            "data.too_large",
            path,
            f"{path} declares {err}; refused before decoding",
            expected=f"at most {pixel_limit():,} pixels",
            got="a possible pixel bomb",
            hint="shrink the image with a trusted tool first",
        ) from None
    except Lossy as err:
        raise _file_fault(
            "data.lossy",
            path,
            f"{path}: {err}",
            expected=f"an image that decodes to {spec.describe()} without loss",
            got=str(err),
            hint="convert it to 8 bits per channel with a trusted tool first",
        ) from None
    except Exception as err:  # any decode failure is reported with the file
        raise _file_fault(
            "data.corrupt",
            path,
            f"{path} cannot be decoded: {type(err).__name__}: {err}",
            expected="a readable image file",
            got=type(err).__name__,
            hint="pass PNG, JPEG, BMP, GIF, WebP or TIFF files",
        ) from None
    try:
        shape = (1, *image.shape)
        check_input(spec, shape, str(image.dtype), f"{image.dtype} {' '.join(map(str, shape))}")
    except ContractError as err:
        raise ContractError(
            dataclasses.replace(d, message=f"{path}: {d.message}", items=(str(path),))
            for d in err.diagnostics
        ) from None
    return image


def _file_fault(code: str, path: str | Path, message: str, **fields: Any) -> ContractError:
    return ContractError(Diagnostic(code, message, stage="input", items=(str(path),), **fields))


def read_images(paths: Iterable[str | Path], spec: ImageSpec) -> np.ndarray:
    """Decode image files to the contract, every file that cannot be decoded named.

    Raises:
        ContractError: a diagnostic per file that cannot be decoded to `spec`.
    """
    images: list[np.ndarray] = []
    faults: list[Diagnostic] = []
    for path in paths:
        try:
            images.append(read_image(path, spec))
        except ContractError as err:
            faults.extend(err.diagnostics)
    if faults:
        raise ContractError(faults)
    return np.stack(images)


@dataclasses.dataclass(frozen=True)
class Prediction:
    """One image file's class, its probability, and the most likely classes."""

    file: str
    class_id: int
    name: str
    probability: float
    top: tuple[tuple[int, str, float], ...]

    def to_json(self) -> dict[str, Any]:
        """`{"file", "class", "name", "probability", "top": [{"class", "name", "probability"}]}`."""
        return {
            "file": self.file,
            "class": self.class_id,
            "name": self.name,
            "probability": self.probability,
            "top": [{"class": c, "name": n, "probability": p} for c, n, p in self.top],
        }


def predict_files(
    model, paths: Iterable[str | Path], top: int = TOP
) -> tuple[list[Prediction], list[Diagnostic]]:
    """Predict every image file with `model` (an `ExportedModel`), a folder standing for
    every image file under it (sorted).

    A file that cannot be read to the contract gets a diagnostic naming it; the
    others are predicted all the same, `PREDICT_CHUNK` at a time.

    Returns:
        The predictions, in file order, and a diagnostic per file that failed.
    """
    files, faults = image_files(paths)
    predictions: list[Prediction] = []
    for start in range(0, len(files), PREDICT_CHUNK):
        read, images = [], []
        for path in files[start : start + PREDICT_CHUNK]:
            try:
                images.append(read_image(path, model.spec))
                read.append(path)
            except ContractError as err:
                faults.extend(err.diagnostics)
        if not images:
            continue
        probabilities = model.predict(np.stack(images))
        for path, row in zip(read, probabilities, strict=True):
            best = [int(i) for i in np.argsort(-row, kind="stable")[:top]]
            ranked = tuple((i, model.class_names[i], float(row[i])) for i in best)
            predictions.append(Prediction(str(path), *ranked[0], ranked))
    return predictions, faults
