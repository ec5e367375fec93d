"""Decoding image files with Pillow: headers without pixels, and pixels as stored.

Shared by the `imagefolder` source and by `predict`, so a file is read the same
way in training and in use. Pillow is imported by the functions that use it.
"""

import dataclasses
import functools
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm"}
)

DECODE_MODES = {"rgb": "RGB", "gray": "L"}

# Pillow's own default for MAX_IMAGE_PIXELS: about 1/4 GiB of 24-bit pixels.
DEFAULT_PIXEL_LIMIT = 89_478_485


@dataclasses.dataclass(frozen=True)
class Header:
    """What a file's header says, or why it could not be read."""

    path: Path
    label: int
    height: int = 0
    width: int = 0
    mode: str = ""  # the mode it decodes to under `mode = "keep"`
    fault: str = ""  # why it cannot be used; "" when readable
    too_large: bool = False  # the fault is its pixel count


def stored_mode(image) -> str:
    """The mode "keep" decodes to: palette images expand to colour, bilevel to 8-bit gray."""
    if image.mode in ("P", "PA"):
        return "RGBA" if image.mode == "PA" or "transparency" in image.info else "RGB"
    return "L" if image.mode == "1" else image.mode


@functools.cache
def mode_layout(mode: str) -> tuple[int, str]:
    """(channels, numpy dtype) of an image decoded in `mode`."""
    from PIL import Image

    pixel = np.asarray(Image.new(mode, (1, 1)))
    return (pixel.shape[2] if pixel.ndim == 3 else 1), str(pixel.dtype)


def pixel_limit() -> int:
    """Pillow's decompression-bomb limit; kept even where a program has switched it off."""
    from PIL import Image

    return Image.MAX_IMAGE_PIXELS or DEFAULT_PIXEL_LIMIT


def read_header(path: Path, label: int) -> Header:
    """Size and mode from the header alone; the pixel count is checked before any decode."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            width, height = image.size
            if width * height > pixel_limit():
                return _bomb(path, label, f"{width}x{height} = {width * height:,} pixels")
            mode = stored_mode(image)
            if image.format == "PNG":
                image.verify()  # walks every chunk and its CRC without decompressing
        return Header(path, label, height, width, mode)
    except Image.DecompressionBombError as err:
        return _bomb(path, label, str(err).split(",")[0])
    except Exception as err:  # any failure to parse means "corrupt"
        return Header(path, label, fault=f"{type(err).__name__}: {err}")


def _bomb(path: Path, label: int, why: str) -> Header:
    return Header(path, label, fault=why, too_large=True)


def decode(path: Path, mode: str, size: tuple[int, int] | None) -> np.ndarray:
    """One image as `(h, w, c)`, in the configured mode and (bilinear) size."""
    from PIL import Image

    with Image.open(path) as opened:
        image: Image.Image = opened
        target = DECODE_MODES.get(mode) or stored_mode(image)
        if image.mode != target:
            image = image.convert(target)
        if size is not None and image.size != (size[1], size[0]):
            image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
        pixels = np.asarray(image)
    return pixels[..., None] if pixels.ndim == 2 else pixels
