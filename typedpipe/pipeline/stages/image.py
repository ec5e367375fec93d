"""Deterministic image ops: dtype, value scale, size, crop and colour conversions."""

import dataclasses
from typing import ClassVar, Literal

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Integer, Shaped

from typedpipe.contracts import ConfigError, Diagnostic, ImageSpec, contract, hints
from typedpipe.pipeline.stages.base import Side, Stage, require_positive, spec_of_batch

# ITU-R BT.601 luma weights: the conventional RGB -> gray mix (sums to 1, so the
# value range is preserved).
_LUMA = (0.299, 0.587, 0.114)


@dataclasses.dataclass(frozen=True)
class ToFloat(Stage):
    """Integer pixels to floats, multiplied by `scale` (1/255 maps uint8 onto [0, 1])."""

    op: ClassVar[str] = "to_float"
    scale: float = 1.0 / 255.0
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"

    def __post_init__(self):
        require_positive(self, scale=self.scale)

    def in_spec(self, spec: ImageSpec) -> ImageSpec:
        self._require(spec, dtype="int")
        value_range = spec.value_range and (
            spec.value_range[0] * self.scale,
            spec.value_range[1] * self.scale,
        )
        return dataclasses.replace(spec, dtype=self.dtype, value_range=value_range)

    @contract
    def __call__(self, images: Integer[Array, "b h w c"], key=None) -> Float[Array, "b h w c"]:
        return images.astype(self.dtype) * jnp.asarray(self.scale, self.dtype)


@dataclasses.dataclass(frozen=True)
class Normalize(Stage):
    """Per-channel `(x - mean) / std`; `mean` and `std` have one entry per channel."""

    op: ClassVar[str] = "normalize"
    mean: tuple[float, ...] = (0.5,)
    std: tuple[float, ...] = (0.5,)

    def __post_init__(self):
        object.__setattr__(self, "mean", tuple(self.mean))
        object.__setattr__(self, "std", tuple(self.std))
        if len(self.mean) != len(self.std):
            raise ConfigError(
                Diagnostic(
                    "config.value",
                    "normalize: mean and std need one entry per channel each",
                    stage=self.op,
                    expected=f"len(std) == len(mean) == {len(self.mean)}",
                    got=f"len(std) = {len(self.std)}",
                    hint="give mean and std the same length",
                )
            )
        require_positive(self, **{f"std[{i}]": s for i, s in enumerate(self.std)})

    @property
    def channels(self) -> int:
        return len(self.mean)

    def in_spec(self, spec: ImageSpec) -> ImageSpec:
        self._require(spec, dtype="float", channels=self.channels)
        if spec.value_range is None:
            return spec
        lo, hi = spec.value_range
        bounds = [((lo - m) / s, (hi - m) / s) for m, s in zip(self.mean, self.std, strict=True)]
        return dataclasses.replace(
            spec, value_range=(min(b[0] for b in bounds), max(b[1] for b in bounds))
        )

    @contract
    def __call__(
        self, images: Float[Array, "b h w {self.channels}"], key=None
    ) -> Float[Array, "b h w {self.channels}"]:
        per_channel = (1, 1, 1, self.channels)
        mean = jnp.asarray(self.mean, images.dtype).reshape(per_channel)
        inv_std = jnp.asarray([1.0 / s for s in self.std], images.dtype).reshape(per_channel)
        return (images - mean) * inv_std


@dataclasses.dataclass(frozen=True)
class Resize(Stage):
    """Resample to `height` x `width`. Only range-preserving (convex) methods are offered."""

    op: ClassVar[str] = "resize"
    height: Side
    width: Side
    method: Literal["bilinear", "nearest"] = "bilinear"

    def __post_init__(self):
        require_positive(self, height=self.height, width=self.width)

    def in_spec(self, spec: ImageSpec) -> ImageSpec:
        self._require(spec, dtype="float")
        return dataclasses.replace(spec, height=self.height, width=self.width)

    @contract
    def __call__(
        self, images: Float[Array, "b h w c"], key=None
    ) -> Float[Array, "b {self.height} {self.width} c"]:
        batch, _, _, channels = images.shape
        shape = (batch, self.height, self.width, channels)
        return jax.image.resize(images, shape, method=self.method)


@dataclasses.dataclass(frozen=True)
class CenterCrop(Stage):
    """Cut the central `height` x `width` window."""

    op: ClassVar[str] = "center_crop"
    height: Side
    width: Side

    def __post_init__(self):
        require_positive(self, height=self.height, width=self.width)

    def in_spec(self, spec: ImageSpec) -> ImageSpec:
        self._require(spec, dtype="any")
        if spec.height < self.height or spec.width < self.width:
            self._fail(
                "shape.spatial",
                f"cannot crop {self.height}x{self.width} from {spec.height}x{spec.width}",
                spec,
                f"at least b {self.height} {self.width} c",
                hints.spatial(self.height, self.width),
            )
        return dataclasses.replace(spec, height=self.height, width=self.width)

    @contract
    def __call__(
        self, images: Shaped[Array, "b h w c"], key=None
    ) -> Shaped[Array, "b {self.height} {self.width} c"]:
        self.in_spec(spec_of_batch(images))
        top = (images.shape[1] - self.height) // 2
        left = (images.shape[2] - self.width) // 2
        return images[:, top : top + self.height, left : left + self.width, :]


@dataclasses.dataclass(frozen=True)
class ToRGB(Stage):
    """Grayscale to RGB by repeating the single channel."""

    op: ClassVar[str] = "to_rgb"

    def in_spec(self, spec: ImageSpec) -> ImageSpec:
        self._require(spec, dtype="any", channels=1)
        return dataclasses.replace(spec, channels=3)

    @contract
    def __call__(self, images: Shaped[Array, "b h w 1"], key=None) -> Shaped[Array, "b h w 3"]:
        return jnp.repeat(images, 3, axis=-1)


@dataclasses.dataclass(frozen=True)
class ToGray(Stage):
    """RGB to grayscale with the BT.601 luma weights."""

    op: ClassVar[str] = "to_gray"

    def in_spec(self, spec: ImageSpec) -> ImageSpec:
        self._require(spec, dtype="float", channels=3)
        return dataclasses.replace(spec, channels=1)

    @contract
    def __call__(self, images: Float[Array, "b h w 3"], key=None) -> Float[Array, "b h w 1"]:
        return images @ jnp.asarray(_LUMA, images.dtype)[:, None]
