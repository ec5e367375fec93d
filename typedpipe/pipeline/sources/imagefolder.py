"""The `imagefolder` source: one sub-folder per class, decoded with Pillow, read through Grain.

The survey reads every file's header (size and colour mode, no pixels), refuses
pixel bombs before anything is decoded, and walks every file's structure (PNG
chunks and their CRCs, JPEG markers to the end-of-image: `integrity`), so a
truncated file is named wherever it sits. It decodes an evenly spaced sample to
measure the value range, and every file of a format with no structural walk
(GIF, BMP, WebP, TIFF), one image at a time: only a range is kept, never pixels.
Links, permissions and odd files get their own diagnostics, and a decode setting
that throws information away a warning (or, where it would saturate 16-bit
pixels, an error). Training then reads the files batch by batch (`FileRecords`),
keeping the decoded images for the next epochs where they fit a memory budget
(`cache`); past it, host memory does not grow with the number of files. Files
are only read: nothing in the folder is ever written, moved or deleted.
"""

import collections
import dataclasses
import functools
import os
import stat
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from beartype.vale import Is

from typedpipe.contracts import ContractError, Diagnostic, ImageSpec, LabelSpec
from typedpipe.contracts.diagnostics import data_corrupt, data_empty
from typedpipe.contracts.specs import LabelFormat
from typedpipe.pipeline.sources.audit import nonfinite_diagnostic, nonfinite_images, value_range
from typedpipe.pipeline.sources.base import DataPath, Source, Survey, labels_as
from typedpipe.pipeline.sources.cache import DecodedCache
from typedpipe.pipeline.sources.decode import (
    DEEP_MODES,
    THREADS,
    Header,
    decode_threads,
    dropped,
    mode_layout,
    pixel_limit,
    read_header,
    target_mode,
    try_decode,
)
from typedpipe.pipeline.sources.walk import (
    Unusable,
    find_images,
    relative,
    unreadable,
    unusable_diagnostics,
)
from typedpipe.progress import track

#: Files decoded by the survey to measure the value range (every file's structure is
#: walked, and files of formats with no walk are decoded, whatever this number).
SAMPLE_SIZE = 256

# Files go to Grain's reader threads in chunks: per-element overhead (~0.1 ms)
# would otherwise cost more than reading a small PNG.
_CHUNK = 64

# A decode size is held to the pixel limit of the files themselves: past it one
# decoded image alone is a pixel bomb.
DecodeSize = Annotated[
    tuple[int, int],
    Is[lambda s: min(s) > 0 and s[0] * s[1] <= pixel_limit()],
    "[height, width]: each >= 1, at most 89,478,485 pixels in all (Pillow's limit)",
]


DecodeMode = Literal["rgb", "gray", "keep"]
#: What a decode mode can throw away.
Loss = Literal["colour", "transparency"]


@dataclasses.dataclass(frozen=True)
class FolderOptions:
    path: DataPath
    mode: DecodeMode = "keep"
    size: DecodeSize | None = None
    # What `mode` may throw away without a warning: said once, on purpose.
    drop: tuple[Loss, ...] = ()


class ImageFolder(Source):
    """`path/<class>/<image>`: labels from the sorted sub-folder names."""

    Options = FolderOptions

    def survey(self) -> Survey:
        return survey_folder(self.options, self.context.labels)

    def records(self, survey: Survey) -> "FileRecords":
        if survey.errors or survey.spec is None:
            raise ContractError(survey.errors or survey.diagnostics)
        return FileRecords(
            survey.files,
            survey.labels,
            survey.spec,
            self.options,
            Path(self.options.path),
            DecodedCache.fitting(len(survey.files), survey.spec),
        )


@dataclasses.dataclass(frozen=True)
class FileRecords:
    """The surveyed files, decoded when first read: Grain's random-access protocol over a folder."""

    files: tuple[Path, ...]
    labels: np.ndarray
    spec: ImageSpec
    options: FolderOptions
    root: Path
    # The decoded images, where they fit in memory; None decodes on every read.
    cache: DecodedCache | None = dataclasses.field(default=None, compare=False, repr=False)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        images, labels = self.read_batch(np.array([index]))
        return images[0], labels[0]

    @property
    def read_threads(self) -> int:
        """Loader threads worth using: several only where decoding releases the GIL long enough."""
        return decode_threads(self.spec.height, self.spec.width)

    def read_batch(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The images at `indices` as one `(n, h, w, c)` array: decoded from their files, or
        as they were decoded by an earlier read (`cache`).

        Raises:
            ContractError: a file no longer decodes to the surveyed spec
                (`data.corrupt`), or holds NaN/inf pixels (`value.nonfinite`).
        """
        images = np.empty((len(indices), *self.spec.shape), self.spec.dtype)
        cached = np.zeros(len(indices), bool)
        if self.cache is not None:
            cached = self.cache.read(indices, images)
        failed: list[tuple[str, str]] = []
        for row in np.flatnonzero(~cached):
            path = self.files[indices[row]]
            pixels = try_decode(path, self.options.mode, self.options.size)
            if (
                isinstance(pixels, str)
                or pixels.shape != images.shape[1:]
                or pixels.dtype != images.dtype
            ):
                why = (
                    pixels
                    if isinstance(pixels, str)
                    else f"decodes to {pixels.dtype} {pixels.shape}"
                )
                failed.append((relative(self.root, path), why))
            else:
                images[row] = pixels
        if failed:
            # check walked these files whole: they changed since, or are damaged
            # inside, where only a decode sees it. Either way the fix is the file.
            raise ContractError(
                corrupt_files(failed, expected=f"readable {self.spec.describe()} images")
            )
        if np.issubdtype(images.dtype, np.floating):  # only floats can hold NaN or inf
            names = [relative(self.root, self.files[i]) for i in indices]
            nonfinite = nonfinite_images(images, names)
            if nonfinite:
                raise ContractError(nonfinite)
        if self.cache is not None:
            self.cache.keep(indices[~cached], images[~cached])
        return images, self.labels[indices]


def _threaded(items: list, fn, phase: str, threads: int = THREADS) -> list:
    """`fn` over `items` in order, in chunks on Grain's reader threads, with prefetch;
    progress is reported as `phase` (`typedpipe.progress`)."""
    import grain

    chunks = [items[i : i + _CHUNK] for i in range(0, len(items), _CHUNK)]
    dataset = grain.MapDataset.source(chunks).map(lambda chunk: [fn(item) for item in chunk])
    options = grain.ReadOptions(num_threads=threads, prefetch_buffer_size=2 * threads)
    results = (result for chunk in dataset.to_iter_dataset(options) for result in chunk)
    return list(track(results, phase, total=len(items)))


@dataclasses.dataclass(frozen=True)
class FolderScan:
    """An image folder's classes, every image file's header (its structure walked), and
    the entries that cannot be used: what a survey, or `typedpipe init`, starts from."""

    root: Path
    classes: list[str]
    headers: list[Header]
    unusable: list[Unusable]


def scan_folder(root: Path) -> FolderScan | list[Diagnostic]:
    """Walk `root`, read every image file's header and structure; or why it cannot be used."""
    scanned = _scan(root)
    if not isinstance(scanned, _Scan):
        return scanned
    headers = _threaded(scanned.files, lambda item: read_header(*item), "check files")
    unusable = scanned.unusable + [
        Unusable(h.path, "permission", h.fault) for h in headers if h.kind == "permission"
    ]
    return FolderScan(root, scanned.classes, headers, unusable)


def survey_folder(
    options: FolderOptions, label_format: LabelFormat = "int", scan: FolderScan | None = None
) -> Survey:
    """Audit an image folder from every file's header and structure and a decoded sample;
    never raises on data. `scan`: the folder's `scan_folder`, when already made."""
    root = Path(options.path)
    scanned = scan if scan is not None else scan_folder(root)
    if not isinstance(scanned, FolderScan):
        return Survey.failed(*scanned)
    classes, headers, unusable = scanned.classes, scanned.headers, scanned.unusable
    files = [(h.path, h.label) for h in headers]
    name = functools.partial(relative, root)
    diagnostics = _empty_classes(root, classes, files, unusable)
    diagnostics.extend(unusable_diagnostics(unusable, name=name))
    too_large = [h for h in headers if h.too_large]
    corrupt = [h for h in headers if h.kind == "corrupt"]
    readable = [h for h in headers if not h.fault]
    refused = [h for h in readable if target_mode(h.mode, options.mode) is None]
    readable = [h for h in readable if target_mode(h.mode, options.mode) is not None]
    diagnostics.extend(_lossy(refused, readable, options, name))
    diagnostics.extend(_mixed(readable, options, name))
    sample, ranges, truncated = _decode_some(readable, options)
    corrupt.extend(h for h in truncated if not h.too_large)
    too_large.extend(h for h in truncated if h.too_large)
    nonfinite = [name(h.path) for h, r in zip(sample, ranges, strict=True) if r.nonfinite]
    if nonfinite:
        diagnostics.append(nonfinite_diagnostic(nonfinite, len(sample)))
    if too_large:
        diagnostics.append(
            Diagnostic(
                "data.too_large",
                f"{len(too_large)} file(s) declare more than "
                f"{pixel_limit():,} pixels; refused before decoding",
                stage="data",
                expected=f"at most {pixel_limit():,} pixels",
                got="a possible pixel bomb",
                hint="remove these files, or shrink them with a trusted tool",
                items=tuple(f"{name(h.path)}: {h.fault}" for h in too_large),
            )
        )
    if corrupt:
        diagnostics.append(corrupt_files([(name(h.path), h.fault) for h in corrupt]))
    bad_paths = {h.path for h in (*corrupt, *too_large)}
    good = [h for h in readable if h.path not in bad_paths]
    found = [r for r in ranges if r.range is not None]
    return Survey(
        _spec(good, found, options) if good else None,
        labels_as(label_format, np.array([h.label for h in good], np.int32), len(classes)),
        LabelSpec(label_format, len(classes)),
        tuple(diagnostics),
        class_names=tuple(classes),
        files=tuple(h.path for h in good),
        root=root,
    )


@dataclasses.dataclass(frozen=True)
class _Scan:
    """The class names, the (file, label) pairs, and what was found but cannot be used."""

    classes: list[str]
    files: list[tuple[Path, int]]
    unusable: list[Unusable]


def _scan(root: Path) -> _Scan | list[Diagnostic]:
    """The folder's classes and files, or why the folder cannot be used at all."""
    if not root.is_dir():
        return [
            _empty(
                f"no folder at {root}",
                "a folder of class sub-folders",
                f"path = {str(root)!r}",
                "set path under [data] to a folder of class sub-folders",
            )
        ]
    try:
        with os.scandir(root) as listing:
            entries = sorted(listing, key=lambda e: e.name)
    except OSError as err:
        code = "data.permission" if isinstance(err, PermissionError) else "data.corrupt"
        return [
            Diagnostic(
                code,
                f"{root} cannot be listed: {err.strerror}",
                stage="data",
                expected="a readable folder",
                got=type(err).__name__,
                hint=f"grant read access to the folder (chmod u+rx {root})",
                items=(str(root),),
            )
        ]
    classes, unusable, loose = [], [], 0
    for entry in entries:
        if entry.name.startswith("."):
            continue
        path = Path(entry.path)
        try:
            mode = os.stat(path).st_mode
        except OSError as err:
            unusable.append(unreadable(entry, err))
            continue
        if stat.S_ISDIR(mode):
            classes.append(entry.name)
        elif stat.S_ISREG(mode):
            loose += 1
    if not classes:
        return [
            _empty(
                f"{root} has no class sub-folders",
                "path/<class>/<image>",
                f"{loose} loose files",
                f"move the images into one sub-folder per class: "
                f"{root}/cat/1.png, {root}/dog/2.png",
            ),
            *unusable_diagnostics(unusable, name=functools.partial(relative, root)),
        ]
    files: list[tuple[Path, int]] = []
    for label, name in enumerate(classes):
        found, bad = find_images([root / name])
        files.extend((path, label) for path in found)
        unusable.extend(bad)
    return _Scan(classes, files, unusable)


def _empty_classes(
    root: Path, classes: list[str], files: list[tuple[Path, int]], unusable: list[Unusable]
) -> list[Diagnostic]:
    """Class folders with no image, except those whose entries another diagnostic names."""
    counts = collections.Counter(label for _, label in files)
    faulted = {u.path.relative_to(root).parts[0] for u in unusable}
    empty = [
        name for label, name in enumerate(classes) if not counts[label] and name not in faulted
    ]
    if not empty:
        return []
    return [
        _empty(
            f"{len(empty)} of {len(classes)} class folders hold no images",
            "images in every class folder",
            f"{len(empty)} empty",
            "add images to these folders or remove them",
            items=empty,
        )
    ]


def _lossy(
    refused: list[Header], readable: list[Header], options: FolderOptions, name
) -> list[Diagnostic]:
    """`data.lossy`: an error where the setting would saturate deep pixels, a warning where
    it drops colour or transparency, or Pillow reads 16-bit colour as 8 bits."""
    found = []
    setting = options.mode
    if refused:
        found.append(
            Diagnostic(
                "data.lossy",
                f'{len(refused)} file(s) of 16-bit or float pixels would saturate as mode = "rgb"',
                stage="data",
                expected='8-bit files, or a mode that keeps their depth ("gray" or "keep")',
                got=", ".join(sorted({h.mode for h in refused})),
                hint='decode them as stored: mode = "gray" (16-bit stays uint16), then '
                '[[preprocess]] op = "to_float" and op = "to_rgb" if the model wants 3 channels',
                items=tuple(f"{name(h.path)} ({h.mode})" for h in refused),
            )
        )
    losing = [(h, _unaccepted(dropped(h.mode, setting), options)) for h in readable]
    losing = [(h, what) for h, what in losing if what]
    if losing:
        keep = (
            'decode with mode = "rgb" (3 channels) or "keep" to keep colour'
            if setting == "gray"
            else 'decode with mode = "keep" (4 channels) to keep transparency'
        )
        accept = ", ".join(
            f'"{w}"' for w in sorted({p for _, w in losing for p in w.split(" and ")})
        )
        found.append(
            Diagnostic(
                "data.lossy",
                f'mode = "{setting}" drops the '
                f"{' / '.join(sorted({w for _, w in losing}))} of {len(losing)} file(s)",
                stage="data",
                expected="a decode that keeps what the files hold",
                got=", ".join(sorted({h.mode for h, _ in losing})),
                hint=f"if that is intended, say so: drop = [{accept}] under [data]; else {keep}",
                severity="warning",
                items=tuple(f"{name(h.path)} ({h.mode}: {w})" for h, w in losing),
            )
        )
    narrowed = [h for h in readable if h.narrowed]
    if narrowed:
        found.append(
            Diagnostic(
                "data.lossy",
                f"{len(narrowed)} 16-bit colour file(s) are read as 8 bits per channel "
                "(Pillow has no 16-bit colour mode)",
                stage="data",
                expected="8 bits per channel",
                got="16 bits per channel",
                hint="if the low bits matter, store the images as uint16 in an .npz "
                '(source = "npz")',
                severity="warning",
                items=tuple(name(h.path) for h in narrowed),
            )
        )
    return found


@dataclasses.dataclass(frozen=True)
class _Decoded:
    """What the sample decode keeps of one image: its finite value range, not its pixels."""

    range: tuple[float, float] | None
    nonfinite: bool


def _decode_some(
    readable: list[Header], options: FolderOptions
) -> tuple[list[Header], list[_Decoded], list[Header]]:
    """Decode an evenly spaced sample and every file whose structure no walk verified, one
    image at a time: the files decoded, what each holds, and those that fail to decode."""
    count = min(SAMPLE_SIZE, len(readable))
    picked = set(np.linspace(0, len(readable) - 1, count, dtype=int).tolist())
    sample = [h for i, h in enumerate(readable) if i in picked or not h.verified]
    decoded = _threaded(
        [h.path for h in sample],
        functools.partial(_try_summary, options=options),
        "decode files",
    )
    pairs = list(zip(sample, decoded, strict=True))
    broken = [
        dataclasses.replace(h, fault=p.why, kind=p.kind) for h, p in pairs if isinstance(p, _Fault)
    ]
    good = [(h, p) for h, p in pairs if isinstance(p, _Decoded)]
    return [h for h, _ in good], [p for _, p in good], broken


@dataclasses.dataclass(frozen=True)
class _Fault:
    why: str
    kind: Literal["corrupt", "too_large"]


def _try_summary(path: Path, options: FolderOptions) -> _Decoded | _Fault:
    pixels = try_decode(path, options.mode, options.size)
    if isinstance(pixels, str):
        return _Fault(pixels, "too_large" if pixels.startswith("TooLarge") else "corrupt")
    return _Decoded(value_range(pixels), bool(nonfinite_images(pixels[None])))


def corrupt_files(failed: list[tuple[str, str]], expected: str = "") -> Diagnostic:
    """`data.corrupt` for files that cannot be used: `(name, why)` pairs. The items are
    the names alone (a script can remove them); the message gives the first one's why."""
    names = [name for name, _ in failed]
    first, why = failed[0]
    listed = ", ".join(names[:3]) + (
        f" and the {len(names) - 3} more listed" if len(names) > 3 else ""
    )
    kinds = collections.Counter(why.split(":")[0] for _, why in failed)
    return data_corrupt(
        f"{len(failed)} file(s) cannot be used: {first}: {why}"
        + (f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""),
        expected=expected or "whole, readable image files",
        got=", ".join(f"{count} {kind}" for kind, count in kinds.most_common()),
        hint=f"remove or replace {listed}, then run typedpipe check again",
        items=names,
    )


def _empty(message: str, expected: str, got: str, hint: str, items=()) -> Diagnostic:
    return data_empty(message, expected=expected, got=got, hint=hint, items=items)


def _mixed(headers: list[Header], options: FolderOptions, name) -> list[Diagnostic]:
    """Sizes or modes that differ across files with no decode setting to unify them."""
    found = []
    if options.size is None:
        sizes = collections.Counter((h.height, h.width) for h in headers)
        if len(sizes) > 1:
            height, width = _most_common(sizes)
            odd = [h for h in headers if (h.height, h.width) != (height, width)]
            found.append(
                Diagnostic(
                    "data.size_mixed",
                    f"{len(sizes)} different image sizes; {len(odd)} file(s) "
                    f"are not {height}x{width} (the most common)",
                    stage="data",
                    expected=f"one size ({height}x{width})",
                    got=f"{len(sizes)} sizes",
                    hint=f"resize at decode: size = [{height}, {width}] under [data]",
                    items=tuple(f"{name(h.path)} ({h.height}x{h.width})" for h in odd),
                )
            )
    modes = collections.Counter(_target(h, options) for h in headers)
    if len(modes) > 1:
        common = _most_common(modes)
        odd = [h for h in headers if _target(h, options) != common]
        if options.mode == "keep" and not set(modes) & DEEP_MODES:
            target = "gray" if common == "L" else "rgb"
            hint = f'decode to one mode: mode = "{target}" under [data]'
        else:
            hint = (
                "convert the files to one bit depth with a trusted tool (8-bit, or 16-bit "
                'gray kept by mode = "gray"), or store them as an .npz'
            )
        found.append(
            Diagnostic(
                "data.mode_mixed",
                f"files in {len(modes)} colour modes "
                f"({', '.join(sorted(modes))}); {len(odd)} are not {common}",
                stage="data",
                expected=f"one colour mode ({common})",
                got=", ".join(sorted(modes)),
                hint=hint,
                items=tuple(f"{name(h.path)} ({h.mode})" for h in odd),
            )
        )
    return found


def _unaccepted(what: str, options: FolderOptions) -> str:
    """What a decode drops ("colour and transparency") less what `drop` accepts."""
    return " and ".join(part for part in what.split(" and ") if part and part not in options.drop)


def _target(header: Header, options: FolderOptions) -> str:
    return target_mode(header.mode, options.mode) or header.mode


def _spec(headers: list[Header], ranges: list[_Decoded], options: FolderOptions) -> ImageSpec:
    """The most common size and mode, as decoded, with the sample's value range."""
    if options.size is not None:
        height, width = options.size
    else:
        height, width = _most_common((h.height, h.width) for h in headers)
    channels, dtype = mode_layout(_most_common(_target(h, options) for h in headers))
    found = [r.range for r in ranges if r.range is not None]
    value_range = (min(r[0] for r in found), max(r[1] for r in found)) if found else None
    return ImageSpec(height, width, channels, dtype, value_range)


def _most_common(values):
    counts = values if isinstance(values, collections.Counter) else collections.Counter(values)
    return counts.most_common(1)[0][0]
