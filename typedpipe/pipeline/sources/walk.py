"""Walking the folders images are read from, and the diagnostics for what a walk cannot use.

Shared by the `imagefolder` source, `typedpipe init` and `predict`, so a folder is
walked, and an entry it cannot use reported, the same way in all three. The walk
reports, never skips, what it cannot use: a dangling or looping symbolic link
(`data.link`), a file or folder it may not read (`data.permission`), a FIFO,
socket or device with an image's name (`data.special`).
"""

import dataclasses
import errno
import os
import stat
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Literal

from typedpipe.contracts import Diagnostic
from typedpipe.contracts.diagnostics import data_empty

IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm"}
)

UnusableKind = Literal["link", "permission", "special"]


@dataclasses.dataclass(frozen=True)
class Unusable:
    """A path a walk found but cannot use, and why (`link`, `permission`, `special`)."""

    path: Path
    kind: UnusableKind
    why: str


def find_images(roots: Iterable[Path]) -> tuple[list[Path], list[Unusable]]:
    """Every image file under `roots` (sorted per root), and every entry that cannot be used.

    Hidden entries (a leading '.') are passed over; folders are walked, linked ones
    too, each once (a link back up is reported, not followed forever); a file whose
    suffix is not an image's is not an image. A dangling or looping link, a folder
    that may not be listed and a FIFO, socket or device with an image's suffix are
    returned as `Unusable`, never skipped in silence.
    """
    files: list[Path] = []
    unusable: list[Unusable] = []
    for root in roots:
        found: list[Path] = []
        _walk(Path(root), found, unusable, set())
        files.extend(sorted(found))
    return files, unusable


def unreadable(entry: os.DirEntry, err: OSError) -> Unusable:
    """Why an entry its folder lists cannot be looked at (`os.stat` raised `err`): a link
    that points at nothing or loops, else no permission."""
    path = Path(entry.path)
    if entry.is_symlink():
        why = "loops" if err.errno == errno.ELOOP else "points at nothing"
        return Unusable(path, "link", f"a link that {why}")
    return Unusable(path, "permission", f"cannot be read: {err.strerror}")


def _walk(folder: Path, found: list[Path], unusable: list[Unusable], seen: set) -> None:
    try:
        info = folder.stat()
        key = (info.st_dev, info.st_ino)
        if key in seen:
            unusable.append(Unusable(folder, "link", "links back to a folder above it"))
            return
        seen = seen | {key}
        with os.scandir(folder) as listing:
            entries = sorted(listing, key=lambda e: e.name)
    except PermissionError as err:
        unusable.append(Unusable(folder, "permission", f"cannot be listed: {err.strerror}"))
        return
    except OSError as err:
        unusable.append(Unusable(folder, "link", f"cannot be listed: {err.strerror}"))
        return
    for entry in entries:
        if entry.name.startswith("."):
            continue
        path = Path(entry.path)
        is_image = path.suffix.lower() in IMAGE_SUFFIXES
        try:
            mode = os.stat(path).st_mode  # follows links
        except OSError as err:
            fault = unreadable(entry, err)
            # A link with no suffix may have been meant as a folder; an entry gone since
            # the listing is no fault.
            meant = is_image or not path.suffix
            if meant if fault.kind == "link" else isinstance(err, PermissionError):
                unusable.append(fault)
            continue
        if stat.S_ISDIR(mode):
            _walk(path, found, unusable, seen)
        elif not is_image:
            continue
        elif stat.S_ISREG(mode):
            found.append(path)
        else:
            unusable.append(Unusable(path, "special", f"not a regular file ({_kind_of(mode)})"))


def _kind_of(mode: int) -> str:
    for test, name in (
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return name
    return "not a file"


def relative(root: Path, path: Path) -> str:
    """`path` as a user names it inside the data folder `root`; as it is, outside it."""
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


@dataclasses.dataclass(frozen=True)
class _Wording:
    """How one kind of unusable entry is reported: its code, and the words for a folder's
    entries taken together (`many`, `expected`, `fix`) or for a file passed alone (`fix_one`)."""

    code: str
    many: str
    expected: str
    fix: str
    fix_one: str


_WORDING: dict[UnusableKind, _Wording] = {
    "link": _Wording(
        "data.link",
        "symbolic link(s) point at nothing or loop",
        "links to existing image files and folders",
        "restore the link targets, or remove the links",
        "restore the link's target, or remove the link",
    ),
    "permission": _Wording(
        "data.permission",
        "file(s) or folder(s) may not be read",
        "readable files and folders",
        "grant read access (chmod -R u+rX on the data folder), or remove them",
        "grant read access to it, or leave it out",
    ),
    "special": _Wording(
        "data.special",
        "entr(ies) with an image's name are not regular files",
        "regular image files",
        "remove them: a FIFO, socket or device is never an image",
        "pass image files: a FIFO, socket or device is never an image",
    ),
}


def unusable_diagnostics(
    unusable: Iterable[Unusable],
    *,
    stage: str = "data",
    name: Callable[[Path], str] = str,
    each: bool = False,
) -> list[Diagnostic]:
    """The diagnostics for entries a walk could not use.

    Args:
        unusable: the entries, as `find_images` returns them.
        stage: the stage the diagnostics name ("data" for a data folder, "input" for
            the files passed to `predict`).
        name: how an entry is named in `items` (relative to the data folder, say).
        each: one diagnostic per entry, naming it in the message (files passed one
            by one); by default one per kind of fault, listing its entries with why.

    Example:
        >>> [d.code for d in unusable_diagnostics([Unusable(Path("a.png"), "link", "a link")])]
        ['data.link']
    """
    unusable = list(unusable)
    if each:
        return [
            Diagnostic(
                _WORDING[u.kind].code,
                f"{name(u.path)}: {u.why}",
                stage=stage,
                expected="a readable image file",
                got=u.why,
                hint=_WORDING[u.kind].fix_one,
                items=(name(u.path),),
            )
            for u in unusable
        ]
    found = []
    for kind, wording in _WORDING.items():
        entries = [u for u in unusable if u.kind == kind]
        if entries:
            found.append(
                Diagnostic(
                    wording.code,
                    f"{len(entries)} {wording.many}",
                    stage=stage,
                    expected=wording.expected,
                    got=f"{len(entries)} unusable",
                    hint=wording.fix,
                    items=tuple(f"{name(u.path)}: {u.why}" for u in entries),
                )
            )
    return found


def image_files(paths: Iterable[str | Path]) -> tuple[list[Path], list[Diagnostic]]:
    """The files named, a folder replaced by every image file under it, sorted.

    Returns:
        The files, and a diagnostic per folder that holds no image file
        (`data.empty`) and per entry that cannot be read as a file: a dangling or
        looping link (`data.link`), no permission (`data.permission`), a FIFO or
        device (`data.special`).
    """
    files: list[Path] = []
    faults: list[Diagnostic] = []
    for path in map(Path, paths):
        if not path.is_dir():
            if path.exists() and not path.is_file():  # a FIFO would block the decode
                special = Unusable(path, "special", "not a regular file")
                faults.extend(unusable_diagnostics([special], stage="input", each=True))
            else:
                files.append(path)
            continue
        found, unusable = find_images([path])
        faults.extend(unusable_diagnostics(unusable, stage="input", each=True))
        if not found and not unusable:
            faults.append(
                data_empty(
                    f"the folder {path} holds no image file",
                    expected=f"files ending in {', '.join(sorted(IMAGE_SUFFIXES))}",
                    got="none",
                    hint="pass image files, or a folder that holds some",
                    items=(str(path),),
                    stage="input",
                )
            )
        files.extend(found)
    return files, faults
