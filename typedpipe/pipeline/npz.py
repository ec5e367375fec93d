"""The `npz` source: arrays `images` (n, h, w[, c]) and `labels` (n,) or (n, k) from one file.

The file is opened without pickle, so a crafted `.npz` cannot run code. Arrays
are handed on as stored; only `layout = "nchw"`, a declared setting, transposes
them to channels-last.
"""

import zipfile

import numpy as np

from typedpipe.contracts import ContractError, Diagnostic, LabelSpec
from typedpipe.pipeline.config import Config
from typedpipe.pipeline.sources import Dataset, data_path, register


@register("npz")
def load_npz(config: Config) -> Dataset:
    """Arrays `images` (n, h, w[, c]) and `labels` (n,) or (n, k) from one `.npz` file."""
    path = data_path(config)
    if not path.is_file():
        raise ContractError(
            Diagnostic(
                "data.empty",
                f"no file at {path}",
                stage="data",
                expected="an .npz file",
                got=f"path = {config.data.path!r}",
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
            Diagnostic(
                "data.corrupt",
                f"{path} cannot be read: {err}",
                stage="data",
                expected="an .npz with arrays images and labels",
                got=type(err).__name__,
                hint="write it with np.savez(path, images=images, labels=labels)",
                items=(str(path),),
            )
        ) from None
    faults = _array_faults(images, labels, config.data.layout)
    if faults:
        raise ContractError(faults)
    if config.data.layout == "nchw" and images.ndim == 4:
        images = np.ascontiguousarray(images.transpose(0, 2, 3, 1))
    if images.ndim == 3:
        images = images[..., None]
    if labels.ndim == 2:
        label_spec = LabelSpec("onehot", labels.shape[1])
    else:
        label_spec = LabelSpec("int", int(labels.max()) + 1 if labels.size else 0)
    names = tuple(map(str, range(label_spec.num_classes)))
    return Dataset(images, labels, label_spec, names)


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
    if (
        images.ndim == 4
        and layout == "nchw"
        and images.shape[3] in (1, 3, 4)
        and images.shape[1] not in (1, 3, 4)
    ):
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
