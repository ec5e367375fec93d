"""Decoded images kept in host memory where they fit, so that every epoch after the
first reads pixels instead of decoding files again.

On 2 cores a 64x64 PNG takes about 80 us to decode, as long per batch as a small
model's step, and the decoding competes with the step for the cores.
"""

import dataclasses
import math

import numpy as np

from typedpipe.contracts import ImageSpec
from typedpipe.memory import available_bytes

#: The most host memory the decoded images of one source may take: this, or a quarter
#: of the host's available memory when training starts, whichever is less.
CACHE_BYTES = 2 * 2**30


@dataclasses.dataclass(frozen=True)
class DecodedCache:
    """Row i of `pixels` holds record i's decoded image once `filled[i]`."""

    pixels: np.ndarray
    filled: np.ndarray

    @classmethod
    def fitting(cls, count: int, spec: ImageSpec) -> "DecodedCache | None":
        """Room for `count` images of `spec`, or None where they would not fit the budget.

        The array is reserved, not touched: memory is taken as rows are filled.
        """
        size = count * math.prod(spec.shape) * np.dtype(spec.dtype).itemsize
        if size > min(CACHE_BYTES, available_bytes() // 4):
            return None
        return cls(np.empty((count, *spec.shape), spec.dtype), np.zeros(count, bool))

    def read(self, indices: np.ndarray, into: np.ndarray) -> np.ndarray:
        """Copy the cached ones of `indices` into their rows of `into`; which rows were."""
        hit = self.filled[indices]
        if hit.any():
            into[hit] = self.pixels[indices[hit]]
        return hit

    def keep(self, indices: np.ndarray, images: np.ndarray) -> None:
        """Remember `images`, decoded and checked, as records `indices`."""
        self.pixels[indices] = images
        self.filled[indices] = True
