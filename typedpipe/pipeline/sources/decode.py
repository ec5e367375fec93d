"""Decoding image files with Pillow: finding them, headers without pixels, pixels as stored.

Shared by the `imagefolder` source and by `predict`, so a file is found, limited
and read the same way in `check`, training and use:

- `find_images` walks a folder and reports, never skips, what it cannot use: a
  dangling or looping symbolic link, a folder it may not read, a FIFO or device
  with an image's name.
- `read_header` reads size and mode without pixels, refuses a file that
  declares more than `pixel_limit()` pixels before anything is decoded, and walks
  the file's structure (`integrity.verify_file`: PNG chunks and CRCs, JPEG
  markers to the end-of-image) so a truncated file is found without a decode.
- `decode` applies the EXIF orientation (as `PIL.ImageOps.exif_transpose`), keeps
  16-bit and float images at their depth, and refuses a conversion that would
  saturate them.

Pillow is imported by the functions that use it.
"""

import dataclasses
import errno
import functools
import os
import stat
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

import numpy as np

from typedpipe.pipeline.sources.integrity import verify_file

IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm"}
)

DECODE_MODES = {"rgb": "RGB", "gray": "L"}

#: Single-channel modes deeper than 8 bits: `mode = "gray"` keeps them as they are
#: (uint16, int32, float32), since converting them to 8-bit "L" saturates them.
DEEP_MODES = frozenset({"I;16", "I", "F"})

# Pillow's own default for MAX_IMAGE_PIXELS: about 1/4 GiB of 24-bit pixels.
DEFAULT_PIXEL_LIMIT = 89_478_485

_ORIENTATION = 0x0112  # the EXIF tag; 5..8 turn the image by a quarter

FaultKind = Literal["", "corrupt", "too_large", "permission"]


class TooLarge(ValueError):
    """A file declares more pixels than `pixel_limit()`: refused before decoding."""


class Lossy(ValueError):
    """The decode setting would saturate the file's values (a 16-bit image to 8 bits)."""


@dataclasses.dataclass(frozen=True)
class Header:
    """What a file's header says, or why it could not be read."""

    path: Path
    label: int
    height: int = 0  # as decoded: after the EXIF orientation
    width: int = 0
    mode: str = ""  # the mode it decodes to under `mode = "keep"`
    fault: str = ""  # why it cannot be used; "" when readable
    kind: FaultKind = ""  # what kind of fault
    narrowed: bool = False  # Pillow reads its 16-bit colour as 8 bits per channel
    verified: bool = False  # its structure was walked whole; else only a decode can tell

    @property
    def too_large(self) -> bool:
        return self.kind == "too_large"


@dataclasses.dataclass(frozen=True)
class Unusable:
    """A path `find_images` found but cannot use, and why (`link`, `permission`, `special`)."""

    path: Path
    kind: Literal["link", "permission", "special"]
    why: str


def stored_mode(image) -> str:
    """The mode "keep" decodes to: palette images expand to colour, bilevel to 8-bit gray,
    16-bit gray of any byte order to native "I;16"."""
    if image.mode in ("P", "PA"):
        return "RGBA" if image.mode == "PA" or "transparency" in image.info else "RGB"
    if image.mode.startswith("I;16"):
        return "I;16"
    return "L" if image.mode == "1" else image.mode


def target_mode(stored: str, setting: str) -> str | None:
    """The mode a file stored as `stored` decodes to under `mode = setting`.

    None: the setting would saturate it (a 16-bit or float image to 8-bit RGB).

    Example:
        >>> target_mode("I;16", "gray"), target_mode("RGBA", "rgb"), target_mode("F", "rgb")
        ('I;16', 'RGB', None)
    """
    if setting == "gray":
        return stored if stored in DEEP_MODES else "L"
    if setting == "rgb":
        return None if stored in DEEP_MODES else "RGB"
    return stored


def dropped(stored: str, setting: str) -> str:
    """What decoding a `stored` file under `setting` throws away ("" when nothing)."""
    if setting == "gray" and stored in ("LA", "La"):
        return "transparency"
    if setting == "gray" and stored not in DEEP_MODES and stored not in ("L", "1"):
        return "colour" + (" and transparency" if "A" in stored else "")
    if setting == "rgb" and stored in ("RGBA", "LA", "PA", "La", "RGBa"):
        return "transparency"
    return ""


@functools.cache
def mode_layout(mode: str) -> tuple[int, str]:
    """(channels, numpy dtype) of an image decoded in `mode`."""
    from PIL import Image

    pixel = np.asarray(Image.new(mode, (1, 1)))
    return (pixel.shape[2] if pixel.ndim == 3 else 1), str(pixel.dtype.newbyteorder("="))


def pixel_limit() -> int:
    """Pillow's decompression-bomb limit; kept even where a program has switched it off.

    The one limit for `check`, training, `predict`, a config's sizes and a model
    bundle's input. Pillow is not imported for it: until it is, nobody can have
    changed its limit from the default.
    """
    image = sys.modules.get("PIL.Image")
    limit = getattr(image, "MAX_IMAGE_PIXELS", None) if image is not None else None
    return limit or DEFAULT_PIXEL_LIMIT


def orientation(image) -> int:
    """The EXIF orientation (1..8) from what the header holds; 1 where there is none.

    A PNG's EXIF is read only where its header carries it: Pillow would decode the
    whole image to look further.
    """
    from PIL import Image

    try:
        if image.format == "PNG":
            raw = image.info.get("exif")
            if not raw:
                return 1
            exif = Image.Exif()
            exif.load(raw)
        else:
            exif = image.getexif()
        value = exif.get(_ORIENTATION, 1)
    except Exception:  # an unreadable EXIF block turns nothing
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _narrowed(image) -> bool:
    """Pillow reads 16-bit colour PNGs and TIFFs as 8 bits per channel (no mode holds them)."""
    if image.mode not in ("RGB", "RGBA", "LA"):
        return False
    return any(";16" in str(getattr(tile, "args", "")) for tile in getattr(image, "tile", ()))


def read_header(path: Path, label: int) -> Header:
    """Size and mode from the header alone, the pixel count checked before any decode, and
    the file's structure walked for truncation and damage (`Header.verified` says whether
    its format allowed that walk)."""
    from PIL import Image

    try:
        verdict = verify_file(path)  # first: it names a truncation better than Pillow's header
        if verdict.fault:
            return Header(path, label, fault=verdict.fault, kind="corrupt")
        with Image.open(path) as image:
            width, height = image.size
            if width * height > pixel_limit():
                return _bomb(path, label, f"{width}x{height} = {width * height:,} pixels")
            if orientation(image) >= 5:
                width, height = height, width
            mode = stored_mode(image)
            narrowed = _narrowed(image)
        return Header(path, label, height, width, mode, narrowed=narrowed, verified=verdict.checked)
    except Image.DecompressionBombError as err:
        return _bomb(path, label, str(err).split(",")[0])
    except PermissionError as err:
        return Header(path, label, fault=f"PermissionError: {err.strerror}", kind="permission")
    except Image.UnidentifiedImageError:
        return Header(path, label, fault="not an image file Pillow can read", kind="corrupt")
    except Exception as err:  # any failure to parse means "corrupt"
        return Header(path, label, fault=f"{type(err).__name__}: {err}", kind="corrupt")


def _bomb(path: Path, label: int, why: str) -> Header:
    return Header(path, label, fault=why, kind="too_large")


def decode(path: Path, mode: str, size: tuple[int, int] | None) -> np.ndarray:
    """One image as `(h, w, c)`, upright, in the configured mode and (bilinear) size.

    Raises:
        TooLarge: the file declares more than `pixel_limit()` pixels (nothing decoded).
        Lossy: `mode` would saturate a 16-bit or float image.
        OSError, ValueError: the file cannot be decoded.
    """
    from PIL import Image, ImageOps

    try:
        opened = Image.open(path)
    except Image.DecompressionBombError as err:  # past twice the limit, Pillow refuses itself
        raise TooLarge(str(err).split(",")[0]) from None
    with opened:
        image: Image.Image = opened
        width, height = image.size
        if width * height > pixel_limit():
            raise TooLarge(
                f"{width}x{height} = {width * height:,} pixels, more than {pixel_limit():,}"
            )
        stored = stored_mode(image)
        target = target_mode(stored, mode)
        if target is None:
            raise Lossy(f'{stored} pixels would saturate as mode = "{mode}"')
        if orientation(image) != 1:
            image = ImageOps.exif_transpose(image)
        if image.mode != target and not (target == "I;16" and image.mode.startswith("I;16")):
            image = image.convert(target)
        if size is not None and image.size != (size[1], size[0]):
            image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
        pixels = np.asarray(image)
    if not pixels.dtype.isnative:  # big-endian 16-bit files: hand on native uint16
        pixels = pixels.astype(pixels.dtype.newbyteorder("="))
    return pixels[..., None] if pixels.ndim == 2 else pixels


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
            if entry.is_symlink():
                # A link with no suffix may have been meant as a folder.
                if is_image or not path.suffix:
                    why = "loops" if err.errno == errno.ELOOP else "points at nothing"
                    unusable.append(Unusable(path, "link", f"a link that {why}"))
            elif isinstance(err, PermissionError):
                unusable.append(Unusable(path, "permission", f"cannot be read: {err.strerror}"))
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
