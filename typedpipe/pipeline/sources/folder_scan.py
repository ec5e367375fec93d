"""An image folder's scan: its class sub-folders, every image file's header and
structure, and the entries that cannot be used; what a survey, or `typedpipe init`,
starts from.

Every file's header is read (size and colour mode, no pixels) and its structure
walked (PNG chunks and their CRCs, JPEG markers to the end-of-image: `integrity`)
on Grain's reader threads, so a truncated file is named wherever it sits. Files are
only read: nothing in the folder is ever written, moved or deleted.
"""

import dataclasses
import functools
import os
import stat
from pathlib import Path

from typedpipe.contracts import Diagnostic
from typedpipe.contracts.diagnostics import data_empty
from typedpipe.pipeline.sources.decode import THREADS, Header, read_header
from typedpipe.pipeline.sources.walk import (
    Unusable,
    find_images,
    relative,
    unreadable,
    unusable_diagnostics,
)
from typedpipe.progress import track

# Files go to Grain's reader threads in chunks: per-element overhead (~0.1 ms)
# would otherwise cost more than reading a small PNG.
_CHUNK = 64


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
    headers = on_threads(scanned.files, lambda item: read_header(*item), "check files")
    unusable = scanned.unusable + [
        Unusable(h.path, "permission", h.fault) for h in headers if h.kind == "permission"
    ]
    return FolderScan(root, scanned.classes, headers, unusable)


def on_threads(items: list, fn, phase: str, threads: int = THREADS) -> list:
    """`fn` over `items` in order, in chunks on Grain's reader threads, with prefetch;
    progress is reported as `phase` (`typedpipe.progress`)."""
    import grain

    chunks = [items[i : i + _CHUNK] for i in range(0, len(items), _CHUNK)]
    dataset = grain.MapDataset.source(chunks).map(lambda chunk: [fn(item) for item in chunk])
    options = grain.ReadOptions(num_threads=threads, prefetch_buffer_size=2 * threads)
    results = (result for chunk in dataset.to_iter_dataset(options) for result in chunk)
    return list(track(results, phase, total=len(items)))


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
            data_empty(
                f"no folder at {root}",
                expected="a folder of class sub-folders",
                got=f"path = {str(root)!r}",
                hint="set path under [data] to a folder of class sub-folders",
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
            data_empty(
                f"{root} has no class sub-folders",
                expected="path/<class>/<image>",
                got=f"{loose} loose files",
                hint=f"move the images into one sub-folder per class: "
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
