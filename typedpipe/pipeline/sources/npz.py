"""The `npz` source: arrays `images` (n, h, w[, c]) and `labels` (n,) or (n, k) from one file.

The file is opened without pickle, so a crafted `.npz` cannot run code. Arrays
are handed on as stored; only `layout = "nchw"`, a declared setting, transposes
them to channels-last.
"""

import dataclasses
import zipfile
from pathlib import Path
from typing import Literal

import numpy as np

from typedpipe.contracts import ContractError, Diagnostic, LabelSpec, looks_channels_last
from typedpipe.contracts.diagnostics import data_corrupt, data_empty
from typedpipe.pipeline.sources.arrays import ArraySource
from typedpipe.pipeline.sources.base import names_of


@dataclasses.dataclass(frozen=True)
class NpzOptions:
    path: str
    layout: Literal["nhwc", "nchw"] = "nhwc"


class Npz(ArraySource):
    """Arrays `images` (n, h, w[, c]) and `labels` (n,) or (n, k) from one `.npz` file."""

    Options = NpzOptions

    def arrays(self) -> tuple[np.ndarray, np.ndarray, LabelSpec, tuple[str, ...]]:
        return load_npz(Path(self.options.path), self.options.layout)


def load_npz(path: Path, layout: str) -> tuple[np.ndarray, np.ndarray, LabelSpec, tuple[str, ...]]:
    """The arrays of one `.npz` file, channels-last.

    Raises:
        ContractError: the file is missing, unreadable, or its arrays are malformed.
    """
    if not path.is_file():
        raise ContractError(
            data_empty(
                f"no file at {path}",
                expected="an .npz file",
                got=f"path = {str(path)!r}",
                hint="set path under [data] to an existing .npz",
            )
        )
    try:
        if not zipfile.is_zipfile(path):
            raise ValueError("it is not an .npz archive")
        with np.load(path, allow_pickle=False) as arrays:
            missing = sorted({"images", "labels"} - set(arrays.files))
            if missing:
                raise ValueError(
                    f"it has no array named {' or '.join(map(repr, missing))} "
                    f"(it holds {', '.join(arrays.files) or 'nothing'})"
                )
            images, labels = arrays["images"], arrays["labels"]
    except Exception as err:  # zip, header, pickle or I/O: all mean "unreadable"
        raise ContractError(
            data_corrupt(
                f"{path} cannot be read: {err}",
                expected="an .npz with arrays images and labels",
                got=type(err).__name__,
                hint="write it with np.savez(path, images=images, labels=labels)",
                items=(str(path),),
            )
        ) from None
    faults = _array_faults(images, labels, layout)
    if faults:
        raise ContractError(faults)
    if layout == "nchw" and images.ndim == 4:
        images = np.ascontiguousarray(images.transpose(0, 2, 3, 1))
    if images.ndim == 3:
        images = images[..., None]
    if labels.ndim == 2:
        label_spec = LabelSpec("onehot", labels.shape[1])
    else:
        label_spec = LabelSpec("int", int(labels.max()) + 1 if labels.size else 0)
    return images, labels, label_spec, tuple(names_of(label_spec.num_classes))


def _array_faults(images: np.ndarray, labels: np.ndarray, layout: str) -> list[Diagnostic]:
    """What makes stored arrays unusable before any spec can be measured."""
    found = []

    def fault(code: str, message: str, expected: str, got: str, hint: str, stage="data"):
        found.append(Diagnostic(code, message, stage=stage, expected=expected, got=got, hint=hint))

    shape = "x".join(map(str, images.shape))
    if images.ndim not in (3, 4):
        fault(
            "shape.rank",
            f"images have {images.ndim} axes",
            "(n, h, w) or (n, h, w, c)",
            f"images {shape}",
            "store images as (n, h, w, c), or (n, h, w) for grayscale",
        )
    if not (np.issubdtype(images.dtype, np.integer) or np.issubdtype(images.dtype, np.floating)):
        fault(
            "dtype.input",
            f"images of dtype {images.dtype}",
            "uint8 or float pixels",
            str(images.dtype),
            "store images as uint8 (0..255) or float32",
        )
    if layout == "nchw" and looks_channels_last(images.shape):
        fault(
            "shape.layout",
            'layout = "nchw" but the images look channels-last',
            "n c h w",
            f"images {shape}",
            'set layout = "nhwc" under [data]',
        )
    if labels.ndim not in (1, 2):
        fault(
            "labels.format",
            f"labels have {labels.ndim} axes",
            "(n,) ids or (n, k) one-hot",
            f"labels {'x'.join(map(str, labels.shape))}",
            "store labels as (n,) integer class ids",
            stage="labels",
        )
    elif labels.ndim == 1 and not np.issubdtype(labels.dtype, np.integer):
        fault(
            "labels.format",
            f"class ids of dtype {labels.dtype}",
            "integer class ids",
            str(labels.dtype),
            "store the labels as integers: labels.astype(np.int32)",
            stage="labels",
        )
    if len(images) != len(labels):
        fault(
            "data.mismatch",
            f"{len(images)} images but {len(labels)} labels",
            "one label per image",
            f"images {len(images)}, labels {len(labels)}",
            "store exactly one label per image, in the same order",
        )
    return found
