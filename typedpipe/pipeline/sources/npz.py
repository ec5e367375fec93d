"""The `npz` source: arrays `images` (n, h, w[, c]) and `labels` (n,) or (n, k) from one file.

The file is opened without pickle, so a crafted `.npz` cannot run code. Before
anything is inflated, the zip directory and each member's `.npy` header are read
(`numpy.lib.format`): a member that declares more than it holds is corrupt, one
that would not fit in host memory is `memory.host`, and one that inflates far
beyond its compressed size is refused as a zip bomb (`data.too_large`). Labels
are validated before anything (class names, one-hot rows) is sized from them.
Arrays are handed on as stored; only `layout = "nchw"`, a declared setting,
transposes them to channels-last.
"""

import dataclasses
import math
import zipfile
from pathlib import Path
from typing import Literal

import numpy as np

from typedpipe.contracts import ContractError, Diagnostic, LabelSpec, looks_channels_last
from typedpipe.contracts.diagnostics import data_corrupt, data_empty
from typedpipe.contracts.specs import MAX_CLASSES
from typedpipe.memory import budget, over_budget, size_text
from typedpipe.pipeline.sources.arrays import ArraySource
from typedpipe.pipeline.sources.base import DataPath, names_of

#: A compressed member inflating to more than this many times its stored size,
#: and to more than `BOMB_FLOOR` bytes, is refused as a zip bomb. Real pixels
#: rarely compress 20:1 with deflate; a bomb of zeros reaches 1000:1.
BOMB_RATIO = 100
BOMB_FLOOR = 64 * 2**20

_WRITE_HINT = "write it with np.savez(path, images=images, labels=labels)"


@dataclasses.dataclass(frozen=True)
class NpzOptions:
    path: DataPath
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
        members = inspect_npz(path)
    except ContractError:
        raise
    except Exception as err:  # zip, header or I/O: all mean "unreadable"
        raise _unreadable(path, err) from None
    _refuse_oversized(path, members, layout)
    try:
        with np.load(path, allow_pickle=False) as arrays:
            labels = arrays["labels"]
            _refuse_label_ids(labels)  # before the images are even read
            images = arrays["images"]
    except ContractError:
        raise
    except Exception as err:  # pickle, a short member, I/O: all mean "unreadable"
        raise _unreadable(path, err) from None
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


@dataclasses.dataclass(frozen=True)
class Member:
    """What an `.npz` member declares, read from the zip directory and its `.npy` header."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    stored: int  # bytes in the archive (compressed)
    size: int  # bytes once inflated, as the zip directory says
    header: int  # bytes of the .npy header

    @property
    def nbytes(self) -> int:
        """Bytes the array declares: what loading it allocates."""
        return math.prod(self.shape) * self.dtype.itemsize


def inspect_npz(path: Path) -> dict[str, Member]:
    """The `images` and `labels` members of an `.npz`, from headers alone: nothing inflated
    beyond the few hundred bytes of each `.npy` header.

    Raises:
        ContractError: `data.corrupt`, a member missing, not an `.npy`, holding Python
            objects, or declaring more data than it holds.
        zipfile.BadZipFile, ValueError, OSError: the archive cannot be read.
    """
    members = {}
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        missing = [key for key in ("images", "labels") if f"{key}.npy" not in names]
        if missing:
            held = ", ".join(n.removesuffix(".npy") for n in names[:10]) or "nothing"
            raise ValueError(
                f"it has no array named {' or '.join(map(repr, missing))} (it holds {held})"
            )
        for key in ("images", "labels"):
            info = archive.getinfo(f"{key}.npy")
            with archive.open(info) as member:
                version = np.lib.format.read_magic(member)
                if version == (1, 0):
                    shape, _, dtype = np.lib.format.read_array_header_1_0(member)
                elif version == (2, 0):
                    shape, _, dtype = np.lib.format.read_array_header_2_0(member)
                else:
                    raise ValueError(f"{key}.npy is .npy format {version}, not 1.0 or 2.0")
                header = member.tell()
            if dtype.hasobject:
                raise ValueError(f"{key} holds Python objects (pickles), which are never loaded")
            found = Member(key, tuple(shape), dtype, info.compress_size, info.file_size, header)
            if found.nbytes > found.size - header:
                raise ContractError(
                    data_corrupt(
                        f"{path}: {key} declares {found.nbytes:,} bytes of data but holds "
                        f"{max(found.size - header, 0):,}",
                        expected="an .npy member as long as its header says",
                        got=f"{key} {'x'.join(map(str, shape))} {dtype}",
                        hint=_WRITE_HINT,
                        items=(str(path),),
                    )
                )
            members[key] = found
    return members


def _refuse_oversized(path: Path, members: dict[str, Member], layout: str) -> None:
    """Zip bombs and arrays that would not fit in host memory, before they are inflated."""
    faults = []
    for member in members.values():
        inflated = member.size
        if inflated > BOMB_FLOOR and inflated > BOMB_RATIO * max(member.stored, 1):
            faults.append(
                Diagnostic(
                    "data.too_large",
                    f"{path}: {member.name} inflates from {size_text(member.stored)} to "
                    f"{size_text(inflated)} ({inflated / max(member.stored, 1):,.0f}:1); "
                    "refused as a possible zip bomb",
                    stage="data",
                    expected=f"at most {BOMB_RATIO}:1 compression above {size_text(BOMB_FLOOR)}",
                    got=f"{inflated / max(member.stored, 1):,.0f}:1",
                    hint="store the arrays uncompressed (np.savez, not np.savez_compressed): "
                    "a file that size on disk is data, not a bomb",
                    items=(str(path),),
                )
            )
    images, labels = members["images"], members["labels"]
    # A channels-first file is transposed into a copy: both are held for a moment.
    need = images.nbytes * (2 if layout == "nchw" else 1) + labels.nbytes
    if need > budget():
        faults.append(
            over_budget(
                f"{path} ({'x'.join(map(str, images.shape))} {images.dtype} images)",
                need,
                "an .npz is held in memory whole: use a smaller one, or store the images as "
                'an image folder (source = "imagefolder"), which is read batch by batch',
                items=(str(path),),
            )
        )
    if faults:
        raise ContractError(faults)


def _refuse_label_ids(labels: np.ndarray) -> None:
    """Label ids no head can have: class names and one-hot rows would be sized from them."""
    if labels.ndim == 1 and np.issubdtype(labels.dtype, np.integer) and labels.size:
        highest = int(labels.max())
        if highest >= MAX_CLASSES:
            count = int(np.count_nonzero(labels >= MAX_CLASSES))
            raise ContractError(
                Diagnostic(
                    "labels.range",
                    f"{count} label(s) are class ids of {MAX_CLASSES:,} or more "
                    f"(the largest is {highest:,}): no model head has that many classes",
                    stage="labels",
                    expected=f"class ids in [0, {MAX_CLASSES:,})",
                    got=f"labels up to {highest:,}",
                    hint="store class ids 0..k-1 (np.unique(labels, return_inverse=True)[1])",
                    items=tuple(
                        f"#{i}" for i in np.flatnonzero(labels >= MAX_CLASSES)[:20].tolist()
                    ),
                    total_items=count,
                )
            )
    if labels.ndim == 2 and labels.shape[1] > MAX_CLASSES:
        raise ContractError(
            Diagnostic(
                "labels.count",
                f"one-hot labels of {labels.shape[1]:,} columns: more classes than any "
                f"head may have ({MAX_CLASSES:,})",
                stage="labels",
                expected=f"at most {MAX_CLASSES:,} columns",
                got=f"labels {'x'.join(map(str, labels.shape))}",
                hint="store one column per class, or (n,) integer class ids",
            )
        )


def _unreadable(path: Path, err: Exception) -> ContractError:
    return ContractError(
        data_corrupt(
            f"{path} cannot be read: {err}",
            expected="an .npz with arrays images and labels",
            got=type(err).__name__,
            hint=_WRITE_HINT,
            items=(str(path),),
        )
    )


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
