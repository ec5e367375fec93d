"""Host-side audits of stored arrays, before any device sees them: their spec, NaN/inf pixels."""

from collections.abc import Sequence

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
    if images.size == 0:
        value_range = None
    elif np.issubdtype(images.dtype, np.floating):
        finite = images[np.isfinite(images)]
        value_range = (float(finite.min()), float(finite.max())) if finite.size else None
    else:
        value_range = (float(images.min()), float(images.max()))
    return ImageSpec(height, width, channels, str(images.dtype), value_range, layout)


def nonfinite_images(
    images: np.ndarray | Sequence[np.ndarray], names: Sequence[str] | None = None
) -> list[Diagnostic]:
    """`value.nonfinite` naming every image with a NaN or inf pixel (by index, or by `names`).

    `images` is one `(n, h, w, c)` array, or separate images of any sizes.
    """
    if isinstance(images, np.ndarray):
        floating = np.issubdtype(images.dtype, np.floating)
        flat = images.reshape(len(images), -1)
        bad = np.flatnonzero(~np.isfinite(flat).all(axis=1)).tolist() if floating else []
    else:
        bad = [
            i
            for i, image in enumerate(images)
            if image.dtype.kind == "f" and not np.isfinite(image).all()
        ]
    if not bad:
        return []
    return [
        Diagnostic(
            "value.nonfinite",
            f"{len(bad)} image(s) hold NaN or inf pixels",
            stage="data",
            expected="finite pixels",
            got=f"NaN/inf in {len(bad)} of {len(images)} images",
            hint="drop or repair these images before training (they are listed)",
            items=tuple(names[i] if names else f"#{i}" for i in bad),
        )
    ]
