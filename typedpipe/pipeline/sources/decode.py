"""Decoding image files with Pillow: headers without pixels, pixels as stored.

Shared by the `imagefolder` source and by `predict`, so a file is limited and
read the same way in `check`, training and use (`walk` finds the files):

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
import functools
import os
import sys
from pathlib import Path
from typing import Literal

import numpy as np

from typedpipe.pipeline.sources.integrity import verify_file

DECODE_MODES = {"rgb": "RGB", "gray": "L"}

#: Single-channel modes deeper than 8 bits: `mode = "gray"` keeps them as they are
#: (uint16, int32, float32), since converting them to 8-bit "L" saturates them.
DEEP_MODES = frozenset({"I;16", "I", "F"})

# Pillow's own default for MAX_IMAGE_PIXELS: about 1/4 GiB of 24-bit pixels.
DEFAULT_PIXEL_LIMIT = 89_478_485

_ORIENTATION = 0x0112  # the EXIF tag; 5..8 turn the image by a quarter

#: Threads worth decoding on (see `decode_threads`).
THREADS = min(8, os.cpu_count() or 1)

# Pillow releases the GIL while it decompresses, so threads pay off for large
# images; for small ones the Python around each decode dominates and threads
# only contend for the GIL. Measured on 2 cores: 10,000 32x32 PNGs decode in
# 0.44 s on one thread, 0.86 s on two; 200 500x375 JPEGs in 0.45 s on one, 0.25 s on two.
_PARALLEL_DECODE_PIXELS = 128 * 128

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


def try_decode(path: Path, mode: str, size: tuple[int, int] | None) -> np.ndarray | str:
    """`decode`, or why the file does not decode ("TooLarge: ...", "OSError: ...")."""
    try:
        return decode(path, mode, size)
    except TooLarge as err:
        return f"TooLarge: {err}"
    except Exception as err:  # a file that will not decode is corrupt
        return f"{type(err).__name__}: {err}"


def decode_threads(height: int, width: int) -> int:
    """Threads worth decoding `height` x `width` images on: several only where decoding
    releases the GIL long enough."""
    return THREADS if height * width >= _PARALLEL_DECODE_PIXELS else 1
