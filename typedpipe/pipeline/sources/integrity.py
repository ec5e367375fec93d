"""Whether an image file is whole, from the structure of its bytes, without decoding a pixel.

A truncated or damaged file opens fine (its header sits at the start) and fails
only when its pixels are decoded, in the middle of training. Decoding every
file in `check` would cost as much as an epoch; the structure of the two common
formats says the same for the price of reading the bytes once:

- PNG: the signature, IHDR first, every chunk whole with its CRC-32
  (`zlib.crc32`), IEND at the end. Bytes after IEND are ignored, as decoders do.
- JPEG: SOI first, every marker segment whole, each scan's entropy-coded data
  running up to a marker, and EOI (FF D9) at the end. Bytes after EOI (padding or
  trailers some cameras and tools append) are allowed, as decoders allow them.

Other formats (GIF, BMP, WebP, TIFF, PNM) have no walker here: `verify_file`
says so (`checked` is False), and the caller decodes those files to know.

Example:
    >>> verify_bytes(b"\\x89PNG\\r\\n\\x1a\\n").fault
    'truncated: the file ends at byte 8, before the IHDR chunk'
"""

import dataclasses
import mmap
import os
import re
import zlib
from pathlib import Path

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_START = b"\xff\xd8\xff"

# Larger files are mapped rather than read: the walk touches each page once, and
# a multi-gigabyte file never sits in memory whole.
_READ_WHOLE = 16 << 20

# In a JPEG scan, FF is followed by 00 (a stuffed FF byte), by a restart marker
# (D0..D7) or by more FF (fill); any other byte ends the scan with a marker.
_SCAN_END = re.compile(rb"\xff[\x01-\xcf\xd8-\xfe]")

_JPEG_NAMES = {0xC0: "SOF0", 0xC2: "SOF2", 0xC4: "DHT", 0xDA: "SOS", 0xDB: "DQT", 0xDD: "DRI"}


@dataclasses.dataclass(frozen=True)
class Verdict:
    """What a file's structure says.

    `fault`: why the file is broken ("" when whole). `checked`: a walker knew the
    format and read every byte of its structure; False leaves the file to a decode.
    """

    checked: bool
    fault: str = ""
    format: str = ""


def verify_file(path: Path) -> Verdict:
    """Walk the file's structure with plain reads; never decodes pixels.

    Raises:
        OSError: the file cannot be opened or read.
    """
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        if size == 0:
            return Verdict(True, "an empty file (0 bytes)")
        if size <= _READ_WHOLE:
            return verify_bytes(handle.read())
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            return verify_bytes(mapped)


def verify_bytes(data: bytes | mmap.mmap) -> Verdict:
    """`verify_file` on bytes already read (or mapped)."""
    if not len(data):
        return Verdict(True, "an empty file (0 bytes)")
    if data[:8] == PNG_SIGNATURE:
        return Verdict(True, _png_fault(data), "PNG")
    if data[:3] == JPEG_START:
        return Verdict(True, _jpeg_fault(data), "JPEG")
    return Verdict(False)


def _png_fault(data: bytes | mmap.mmap) -> str:
    """Why a PNG is broken, walking its chunks: length, type, data, CRC-32; "" when whole."""
    view, size, pos, previous = memoryview(data), len(data), 8, "the signature"
    while True:
        if pos + 8 > size:
            expected = "the IHDR chunk" if pos == 8 else "the IEND chunk"
            return f"truncated: the file ends at byte {size}, before {expected}"
        length = int.from_bytes(view[pos : pos + 4], "big")
        kind = bytes(view[pos + 4 : pos + 8])
        if not kind.isalpha() or length >= 1 << 31:
            return f"damaged: no valid chunk at byte {pos} (after {previous})"
        name = kind.decode("ascii")
        if pos == 8 and kind != b"IHDR":
            return f"damaged: the first chunk is {name}, not IHDR"
        end = pos + 12 + length
        if end > size:
            return (
                f"truncated: the file ends at byte {size}, inside the {name} chunk "
                f"at byte {pos} (which declares {length:,} bytes)"
            )
        stored = int.from_bytes(view[end - 4 : end], "big")
        if zlib.crc32(view[pos + 4 : end - 4]) != stored:
            return f"damaged: the {name} chunk at byte {pos} fails its CRC-32 check"
        if kind == b"IEND":
            return ""
        pos, previous = end, f"the {name} chunk"


def _jpeg_fault(data: bytes | mmap.mmap) -> str:
    """Why a JPEG is broken, walking its markers and scans to EOI; "" when whole."""
    size, pos = len(data), 2
    while True:
        if pos >= size or data[pos] != 0xFF:
            if pos >= size:
                return f"truncated: the file ends at byte {size}, with no end-of-image marker"
            return f"damaged: no marker at byte {pos} where one should start"
        while pos < size and data[pos] == 0xFF:  # fill bytes may precede a marker
            pos += 1
        if pos >= size:
            return f"truncated: the file ends at byte {size}, with no end-of-image marker"
        marker = data[pos]
        pos += 1
        if marker == 0xD9:  # EOI: whatever follows is padding or a trailer
            return ""
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # standalone markers, no length
            continue
        if marker in (0x00, 0xD8):
            return f"damaged: an unexpected FF {marker:02X} at byte {pos - 2}"
        name = _JPEG_NAMES.get(marker, f"FF {marker:02X}")
        if pos + 2 > size:
            return f"truncated: the file ends at byte {size}, inside the {name} segment"
        length = int.from_bytes(data[pos : pos + 2], "big")
        if length < 2:
            return f"damaged: the {name} segment at byte {pos - 2} declares {length} bytes"
        if pos + length > size:
            return (
                f"truncated: the file ends at byte {size}, inside the {name} segment "
                f"at byte {pos - 2} (which declares {length:,} bytes)"
            )
        pos += length
        if marker == 0xDA:  # the entropy-coded scan runs to the next marker
            end = _SCAN_END.search(data, pos)
            if end is None:
                return (
                    f"truncated: the image data ends at byte {size} without "
                    "an end-of-image marker (FF D9)"
                )
            pos = end.start()
