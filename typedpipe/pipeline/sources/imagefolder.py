"""The `imagefolder` source: one sub-folder per class, decoded with Pillow, read through Grain.

Its survey is the folder's audit (`folder_audit`, from the scan in `folder_scan`):
every file's header and structure, and a decoded sample, before training starts.
Training then reads the files batch by batch (`FileRecords`), keeping the decoded
images for the next epochs where they fit a memory budget (`cache`); past it, host
memory does not grow with the number of files. Files are only read: nothing in the
folder is ever written, moved or deleted.
"""

import dataclasses
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from beartype.vale import Is

from typedpipe.contracts import ContractError, ImageSpec
from typedpipe.pipeline.sources.audit import nonfinite_images
from typedpipe.pipeline.sources.base import DataPath, Source, Survey
from typedpipe.pipeline.sources.cache import DecodedCache
from typedpipe.pipeline.sources.decode import decode_threads, pixel_limit, try_decode
from typedpipe.pipeline.sources.folder_audit import corrupt_files, survey_folder
from typedpipe.pipeline.sources.walk import relative

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
