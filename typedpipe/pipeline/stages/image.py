"""Deterministic image ops: dtype, value scale, size, crop and colour conversions."""

import dataclasses
from typing import ClassVar, Literal

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Integer, Shaped

from typedpipe.contracts import ConfigError, Diagnostic, ImageSpec, contract, hints
from typedpipe.contracts.diagnostics import config_value
from typedpipe.pipeline.stages.base import (
    Positive,
    Side,
    Stage,
    require_positive,
    spec_of_batch,
)

#: Named statistics for `normalize`, (mean, std) per RGB channel of [0, 1] pixels.
#: ImageNet's are what torchvision's and timm's pretrained weights were trained on.
NORMALIZE_PRESETS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}

# ITU-R BT.601 luma weights: the conventional RGB -> gray mix (sums to 1, so the
# value range is preserved).
_LUMA = (0.299, 0.587, 0.114)


@dataclasses.dataclass(frozen=True)
class ToFloat(Stage):
    """Integer pixels to floats, multiplied by `scale` (1/255 maps uint8 onto [0, 1])."""

    op: ClassVar[str] = "to_float"
    scale: Positive = 1.0 / 255.0
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"

    def __post_init__(self):
        require_positive(self, scale=self.scale)

    def in_spec(self, spec: ImageSpec) -> ImageSpec:
        if spec.is_float and spec.layout == "nhwc":
            self._fail(
                "dtype.input",
                f"the batch reaching to_float holds {spec.dtype} pixels already",
                spec,
                "int b h w c",
                _float_fix(spec),
            )
        self._require(spec, dtype="int")
        value_range = spec.value_range and (
            spec.value_range[0] * self.scale,
            spec.value_range[1] * self.scale,
        )
        return dataclasses.replace(spec, dtype=self.dtype, value_range=value_range)

    @contract
    def __call__(self, images: Integer[Array, "b h w c"], key=None) -> Float[Array, "b h w c"]:
        return images.astype(self.dtype) * jnp.asarray(self.scale, self.dtype)


def _float_fix(spec: ImageSpec) -> str:
    """What replaces a to_float stage that receives floats: nothing where they are scaled
    already, else the normalize stage that scales them onto [0, 1] as to_float would."""
    if spec.value_range is None or spec.value_range[1] <= 1.5:
        return f"remove {hints.THIS_STAGE}: the pixels are floats already"
    normalize = hints.stage_line(
        "normalize", **hints.onto(spec.value_range, (0.0, 1.0), spec.channels)
    )
    return f"replace {hints.THIS_STAGE} with {normalize} (the pixels are floats already)"


@dataclasses.dataclass(frozen=True)
class Normalize(Stage):
    """Per-channel `(x - mean) / std`; `mean` and `std` have one entry per channel.

    `preset = "imagenet"` sets them to ImageNet's statistics (`NORMALIZE_PRESETS`),
    for RGB pixels in [0, 1]: it refuses other images, and mean or std given beside it.

    Example:
        >>> Normalize(preset="imagenet").mean
        (0.485, 0.456, 0.406)
    """

    op: ClassVar[str] = "normalize"
    mean: tuple[float, ...] = (0.5,)
    std: tuple[float, ...] = (0.5,)
    preset: Literal["imagenet"] | None = None

    def __post_init__(self):
        object.__setattr__(self, "mean", tuple(self.mean))
        object.__setattr__(self, "std", tuple(self.std))
        if self.preset is not None:
            self._apply_preset()
        if len(self.mean) != len(self.std):
            channels = max(len(self.mean), len(self.std))
            raise ConfigError(
                Diagnostic(
                    "config.value",
                    "normalize: mean and std need one entry per channel each",
                    stage=self.op,
                    expected=f"len(std) == len(mean) == {len(self.mean)}",
                    got=f"len(std) = {len(self.std)}",
                    hint=self._per_channel(channels),
                )
            )
        bad = [i for i, s in enumerate(self.std) if not s > 0]
        if bad:
            raise ConfigError(
                Diagnostic(
                    "config.value",
                    f"normalize: std[{bad[0]}] must be > 0",
                    stage=self.op,
                    expected="std > 0 for each channel",
                    got=f"std = {list(self.std)}",
                    hint=hints.assign(
                        hints.THIS_STAGE, std=[s if s > 0 else 1.0 for s in self.std]
                    ),
                )
            )

    def _apply_preset(self) -> None:
        """mean and std from the preset; given beside it, they must be the preset's own (a
        resolved config writes all three) or a `config.value` error says which to remove."""
        if self.preset not in NORMALIZE_PRESETS:
            raise ConfigError(
                config_value(
                    f"normalize: no preset {self.preset!r}",
                    stage=self.op,
                    expected=" | ".join(repr(name) for name in NORMALIZE_PRESETS),
                    got=f"preset = {self.preset!r}",
                    hint=hints.assign(hints.THIS_STAGE, preset=next(iter(NORMALIZE_PRESETS))),
                )
            )
        statistics = dict(zip(("mean", "std"), NORMALIZE_PRESETS[self.preset], strict=True))
        given = [
            key
            for key, value in (("mean", self.mean), ("std", self.std))
            if value not in ((0.5,), statistics[key])
        ]
        if given:
            raise ConfigError(
                config_value(
                    f"normalize: preset = {self.preset!r} sets mean and std, but "
                    f"{' and '.join(given)} {'are' if len(given) > 1 else 'is'} given too",
                    stage=self.op,
                    expected="preset, or mean and std",
                    got=", ".join(f"{k} = {hints.toml(list(getattr(self, k)))}" for k in given),
                    hint=" and ".join(f"remove {k} from {hints.THIS_STAGE}" for k in given)
                    + f" (the preset sets mean and std), or remove preset from {hints.THIS_STAGE}",
                )
            )
        for key, value in statistics.items():
            object.__setattr__(self, key, value)

    def _preset_fix(self, spec: ImageSpec) -> str:
        """For a preset on an image that is not RGB: the preset's statistics averaged over
        the channels, one entry per channel the image has; or, for gray, to_rgb before."""
        mean, std = (round(sum(v) / len(v), 3) for v in NORMALIZE_PRESETS[str(self.preset)])
        own = hints.assign(hints.THIS_STAGE, mean=[mean] * spec.channels, std=[std] * spec.channels)
        fix = f"remove preset from {hints.THIS_STAGE} and {own}"
        if spec.channels == 1:
            fix += f", or add {hints.stage_line('to_rgb')} before {hints.THIS_STAGE}"
        return fix

    def _per_channel(self, channels: int) -> str:
        """mean and std with one entry per channel: the values given, the last one repeated."""

        def fit(values: tuple[float, ...]) -> list[float]:
            return [*values[:channels], *[values[-1]] * (channels - len(values))]

        return hints.assign(hints.THIS_STAGE, mean=fit(self.mean), std=fit(self.std))

    @property
    def channels(self) -> int:
        return len(self.mean)

    def in_spec(self, spec: ImageSpec) -> ImageSpec:
        if self.preset and spec.layout == "nhwc" and spec.is_float and spec.channels != 3:
            self._fail(
                "shape.channels",
                f"normalize's preset {self.preset!r} holds RGB statistics, but the batch "
                f"reaching it has {spec.channels} channel(s)",
                spec,
                "float b h w 3 in [0, 1]",
                self._preset_fix(spec),
            )
        if spec.layout == "nhwc" and spec.is_float and spec.channels != self.channels:
            self._fail(
                "shape.channels",
                f"the batch reaching normalize has {spec.channels} channel(s), but mean and "
                f"std have {self.channels} entries",
                spec,
                f"float b h w {self.channels}",
                self._per_channel(spec.channels),
            )
        self._require(spec, dtype="float", channels=self.channels)
        if self.preset:
            self._require_unit_range(spec, f"normalize's preset {self.preset!r}")
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
        if spec.layout == "nhwc" and spec.channels == 3:
            self._fail(
                "shape.channels",
                "the batch reaching to_rgb is RGB already",
                spec,
                "any b h w 1",
                f"remove {hints.THIS_STAGE}",
            )
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
        if spec.layout == "nhwc" and spec.channels == 1:
            self._fail(
                "shape.channels",
                "the batch reaching to_gray is grayscale already",
                spec,
                "float b h w 3",
                f"remove {hints.THIS_STAGE}",
            )
        self._require(spec, dtype="float", channels=3)
        return dataclasses.replace(spec, channels=1)

    @contract
    def __call__(self, images: Float[Array, "b h w 3"], key=None) -> Float[Array, "b h w 1"]:
        return images @ jnp.asarray(_LUMA, images.dtype)[:, None]
