"""Host-side audits of stored arrays, before any device sees them: their spec, NaN/inf pixels.

Each audit reads the array a block of images at a time, so that it needs a few
megabytes beside the data, never a copy of it.
"""

from collections.abc import Iterator, Sequence

import numpy as np

from typedpipe.contracts import Diagnostic, ImageSpec, looks_channels_first
from typedpipe.contracts.specs import Layout


def class_ids(labels: np.ndarray) -> np.ndarray:
    """Integer class ids, whatever the stored label format."""
    return labels.argmax(-1) if labels.ndim == 2 else labels


def spec_of(images: np.ndarray) -> ImageSpec:
    """The spec of a stored image array; the value range is measured, not assumed.

    A 4-d array whose axis 1 looks like channels (1, 3 or 4) and whose last axis
    does not is reported channels-first, so the check can name the layout.
    """
    if looks_channels_first(images.shape):
        channels, height, width = images.shape[1:]
        layout: Layout = "nchw"
    else:
        height, width, channels = images.shape[1:4] if images.ndim == 4 else (*images.shape[1:], 1)
        layout = "nhwc"
    return ImageSpec(height, width, channels, str(images.dtype), value_range(images), layout)


# Elements an audit reads at once: 4 MiB of float32.
_BLOCK = 1 << 20


def _blocks(images: np.ndarray) -> Iterator[np.ndarray]:
    """`images` flattened per image, a few images at a time (views, not copies)."""
    rows = max(1, _BLOCK // max(1, images[0].size)) if len(images) else 1
    for start in range(0, len(images), rows):
        yield images[start : start + rows].reshape(len(images[start : start + rows]), -1)


def value_range(images: np.ndarray) -> tuple[float, float] | None:
    """(min, max) of the finite values of `images`; None where there is none.

    Example:
        >>> value_range(np.array([[1.0, np.nan], [-2.0, np.inf]]))
        (-2.0, 1.0)
    """
    if images.size == 0:
        return None
    if images.ndim < 2:
        images = images[None]
    floating = np.issubdtype(images.dtype, np.floating)
    lows, highs = [], []
    for block in _blocks(images):
        if floating:
            finite = np.isfinite(block)
            if not finite.any():
                continue
            if not finite.all():
                lows.append(float(np.where(finite, block, np.inf).min()))
                highs.append(float(np.where(finite, block, -np.inf).max()))
                continue
        lows.append(float(block.min()))
        highs.append(float(block.max()))
    return (min(lows), max(highs)) if lows else None


def nonfinite_images(
    images: np.ndarray | Sequence[np.ndarray], names: Sequence[str] | None = None
) -> list[Diagnostic]:
    """`value.nonfinite` naming every image with a NaN or inf pixel (by index, or by `names`).

    `images` is one `(n, h, w, c)` array, or separate images of any sizes.
    """
    if isinstance(images, np.ndarray):
        bad: list[int] = []
        if np.issubdtype(images.dtype, np.floating) and images.ndim >= 1 and len(images):
            start = 0
            for block in _blocks(images):
                bad.extend((start + np.flatnonzero(~np.isfinite(block).all(axis=1))).tolist())
                start += len(block)
    else:
        bad = [
            i
            for i, image in enumerate(images)
            if image.dtype.kind == "f" and not np.isfinite(image).all()
        ]
    if not bad:
        return []
    return [nonfinite_diagnostic([names[i] if names else f"#{i}" for i in bad], len(images))]


def nonfinite_diagnostic(items: Sequence[str], total: int) -> Diagnostic:
    """`value.nonfinite` naming the images (files or `#index`) that hold NaN or inf."""
    return Diagnostic(
        "value.nonfinite",
        f"{len(items)} image(s) hold NaN or inf pixels",
        stage="data",
        expected="finite pixels",
        got=f"NaN/inf in {len(items)} of {total} images",
        hint="drop or repair these images before training (they are listed)",
        items=tuple(items),
    )
