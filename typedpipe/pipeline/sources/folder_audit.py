"""An image folder's audit: what its files hold against the decode settings, and the
image spec they decode to; never raises on data.

From the scan (`folder_scan`) alone: pixel bombs, refused before anything is
decoded; damaged files; class folders with no image; links, permissions and odd
files (`walk`); sizes and colour modes that differ with no decode setting to unify
them; a decode setting that throws information away (a warning, or an error where
it would saturate 16-bit pixels). Then an evenly spaced sample is decoded to
measure the value range, with every file of a format with no structural walk (GIF,
BMP, WebP, TIFF), one image at a time: only a range is kept, never pixels.
"""

import collections
import dataclasses
import functools
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from typedpipe.contracts import Diagnostic, ImageSpec, LabelSpec
from typedpipe.contracts.diagnostics import data_corrupt, data_empty
from typedpipe.contracts.specs import LabelFormat
from typedpipe.pipeline.sources.audit import nonfinite_diagnostic, nonfinite_images, value_range
from typedpipe.pipeline.sources.base import Survey, labels_as
from typedpipe.pipeline.sources.decode import (
    DEEP_MODES,
    Header,
    dropped,
    mode_layout,
    pixel_limit,
    target_mode,
    try_decode,
)
from typedpipe.pipeline.sources.folder_scan import FolderScan, on_threads, scan_folder
from typedpipe.pipeline.sources.walk import Unusable, relative, unusable_diagnostics

if TYPE_CHECKING:  # the source's options; imagefolder imports this module
    from typedpipe.pipeline.sources.imagefolder import FolderOptions

#: Files decoded by the survey to measure the value range (every file's structure is
#: walked, and files of formats with no walk are decoded, whatever this number).
SAMPLE_SIZE = 256


def survey_folder(
    options: "FolderOptions", label_format: LabelFormat = "int", scan: FolderScan | None = None
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
        data_empty(
            f"{len(empty)} of {len(classes)} class folders hold no images",
            expected="images in every class folder",
            got=f"{len(empty)} empty",
            hint="add images to these folders or remove them",
            items=empty,
        )
    ]


def _lossy(
    refused: list[Header], readable: list[Header], options: "FolderOptions", name
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
    readable: list[Header], options: "FolderOptions"
) -> tuple[list[Header], list[_Decoded], list[Header]]:
    """Decode an evenly spaced sample and every file whose structure no walk verified, one
    image at a time: the files decoded, what each holds, and those that fail to decode."""
    count = min(SAMPLE_SIZE, len(readable))
    picked = set(np.linspace(0, len(readable) - 1, count, dtype=int).tolist())
    sample = [h for i, h in enumerate(readable) if i in picked or not h.verified]
    decoded = on_threads(
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


def _try_summary(path: Path, options: "FolderOptions") -> _Decoded | _Fault:
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


def _mixed(headers: list[Header], options: "FolderOptions", name) -> list[Diagnostic]:
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


def _unaccepted(what: str, options: "FolderOptions") -> str:
    """What a decode drops ("colour and transparency") less what `drop` accepts."""
    return " and ".join(part for part in what.split(" and ") if part and part not in options.drop)


def _target(header: Header, options: "FolderOptions") -> str:
    return target_mode(header.mode, options.mode) or header.mode


def _spec(headers: list[Header], ranges: list[_Decoded], options: "FolderOptions") -> ImageSpec:
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
