"""Preprocessing stages: small frozen objects with a contract as data and a typed call.

Each stage pairs `in_spec(spec) -> spec` (checked symbolically, before any array
exists) with a `__call__` whose jaxtyping annotations beartype enforces while JAX
traces. Stages run on the device, batched (`b h w c`), inside the jitted step.
Augmentations take an explicit PRNG key and are skipped at evaluation.
"""

import dataclasses
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Integer, PRNGKeyArray, Shaped

from typedpipe.contracts import (
    ConfigError,
    ContractError,
    Diagnostic,
    ImageSpec,
    contract,
    hints,
    suggest,
)

STAGES: dict[str, type["Stage"]] = {}

# ITU-R BT.601 luma weights: the conventional RGB -> gray mix (sums to 1, so the
# value range is preserved).
_LUMA = (0.299, 0.587, 0.114)


def register(cls: type["Stage"]) -> type["Stage"]:
    """Register a stage class under its `op` name; a name registers once."""
    if cls.op in STAGES:
        raise ValueError(f"stage op {cls.op!r} is already registered by {STAGES[cls.op]}")
    STAGES[cls.op] = cls
    return cls


def make_stage(op: str, **params: Any) -> "Stage":
    """Build a registered stage by name, e.g. `make_stage("resize", height=32, width=32)`."""
    return stage_class(op)(**params)


def stage_class(op: str) -> type["Stage"]:
    """The registered stage class of `op`; an unknown op is a `config.unknown_op` error."""
    if op not in STAGES:
        raise ConfigError(
            Diagnostic(
                "config.unknown_op",
                f"no preprocessing op named {op!r}",
                stage="preprocess",
                expected=", ".join(sorted(STAGES)),
                got=op,
                hint=f"{suggest(op, STAGES)} (ops: {', '.join(sorted(STAGES))})",
            )
        )
    return STAGES[op]


@dataclasses.dataclass(frozen=True)
class Stage:
    """Base of every stage. Subclasses are frozen dataclasses with an `op` name."""

    op: ClassVar[str]
    augmentation: ClassVar[bool] = False

    @property
    def name(self) -> str:
        return self.op

    def __call__(self, images: Array, key: PRNGKeyArray | None = None) -> Array:
        """The stage's work on a batch `b h w c`; `key` is used by augmentations only."""
        raise NotImplementedError

    def in_spec(self, spec: ImageSpec) -> ImageSpec:
        """The spec this stage hands on, or a ContractError naming the broken boundary."""
        raise NotImplementedError

    def _fail(self, code: str, message: str, spec: ImageSpec, expected: str, hint: str):
        raise ContractError(
            Diagnostic(
                code,
                message,
                stage=self.name,
                expected=expected,
                got=spec.describe(),
                hint=hint,
            )
        )

    def _require(
        self, spec: ImageSpec, *, dtype: Literal["float", "int", "any"], channels: int | None = None
    ) -> None:
        """The checks most stages share: channels-last, dtype family, channel count."""
        want_dims = f"b h w {channels if channels is not None else 'c'}"
        if spec.layout != "nhwc":
            self._fail(
                "shape.layout",
                "stages expect channels-last images",
                spec,
                f"{dtype} {want_dims}",
                hints.layout(),
            )
        if dtype == "float" and not spec.is_float:
            self._fail(
                "dtype.input",
                f"{self.op} needs float pixels, got {spec.dtype}",
                spec,
                f"float {want_dims}",
                hints.dtype(expected_float=True),
            )
        if dtype == "int" and spec.is_float:
            self._fail(
                "dtype.input",
                f"{self.op} needs integer pixels, got {spec.dtype}",
                spec,
                f"uint8 {want_dims}",
                hints.dtype(expected_float=False),
            )
        if channels is not None and spec.channels != channels:
            self._fail(
                "shape.channels",
                f"{self.op} needs {channels} channel(s)",
                spec,
                f"{dtype} {want_dims}",
                hints.channels(channels, spec.channels),
            )


def _spec_of(images: Array) -> ImageSpec:
    """The spec of a traced batch, for constraints an annotation cannot state (h >= crop)."""
    _, height, width, channels = images.shape
    return ImageSpec(height, width, channels, str(images.dtype), value_range=None)


def _positive(stage: Stage, **values: float) -> None:
    for key, value in values.items():
        if not value > 0:
            raise ConfigError(
                Diagnostic(
                    "config.value",
                    f"{stage.op}: {key} must be > 0",
                    stage=stage.op,
                    expected=f"{key} > 0",
                    got=f"{key} = {value}",
                    hint=f"set {key} to a positive value",
                )
            )


@register
@dataclasses.dataclass(frozen=True)
class ToFloat(Stage):
    """Integer pixels to floats, multiplied by `scale` (1/255 maps uint8 onto [0, 1])."""

    op: ClassVar[str] = "to_float"
    scale: float = 1.0 / 255.0
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"

    def __post_init__(self):
        _positive(self, scale=self.scale)

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


@register
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
        _positive(self, **{f"std[{i}]": s for i, s in enumerate(self.std)})

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


@register
@dataclasses.dataclass(frozen=True)
class Resize(Stage):
    """Resample to `height` x `width`. Only range-preserving (convex) methods are offered."""

    op: ClassVar[str] = "resize"
    height: int
    width: int
    method: Literal["bilinear", "nearest"] = "bilinear"

    def __post_init__(self):
        _positive(self, height=self.height, width=self.width)

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


@register
@dataclasses.dataclass(frozen=True)
class CenterCrop(Stage):
    """Cut the central `height` x `width` window."""

    op: ClassVar[str] = "center_crop"
    height: int
    width: int

    def __post_init__(self):
        _positive(self, height=self.height, width=self.width)

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
        self.in_spec(_spec_of(images))
        top = (images.shape[1] - self.height) // 2
        left = (images.shape[2] - self.width) // 2
        return images[:, top : top + self.height, left : left + self.width, :]


@register
@dataclasses.dataclass(frozen=True)
class RandomCrop(Stage):
    """Zero-pad by `padding`, then cut a random `height` x `width` window per image."""

    op: ClassVar[str] = "random_crop"
    augmentation: ClassVar[bool] = True
    height: int
    width: int
    padding: int = 0

    def __post_init__(self):
        _positive(self, height=self.height, width=self.width, padding=self.padding + 1)

    def in_spec(self, spec: ImageSpec) -> ImageSpec:
        self._require(spec, dtype="any")
        if (
            spec.height + 2 * self.padding < self.height
            or spec.width + 2 * self.padding < self.width
        ):
            self._fail(
                "shape.spatial",
                f"cannot crop {self.height}x{self.width} from "
                f"{spec.height}x{spec.width} padded by {self.padding}",
                spec,
                f"at least b {self.height} {self.width} c",
                hints.spatial(self.height, self.width),
            )
        value_range = spec.value_range
        if self.padding and value_range is not None:
            # Zero padding adds the value 0 to the range.
            value_range = (min(value_range[0], 0.0), max(value_range[1], 0.0))
        return dataclasses.replace(
            spec, height=self.height, width=self.width, value_range=value_range
        )

    @contract
    def __call__(  # type: ignore[override]  # an augmentation requires the key
        self, images: Shaped[Array, "b h w c"], key: PRNGKeyArray
    ) -> Shaped[Array, "b {self.height} {self.width} c"]:
        self.in_spec(_spec_of(images))
        p = self.padding
        padded = jnp.pad(images, ((0, 0), (p, p), (p, p), (0, 0)))
        batch, height, width, channels = padded.shape
        keys = jax.random.split(key, batch)

        def crop(image, image_key):
            top_key, left_key = jax.random.split(image_key)
            top = jax.random.randint(top_key, (), 0, height - self.height + 1)
            left = jax.random.randint(left_key, (), 0, width - self.width + 1)
            return jax.lax.dynamic_slice(image, (top, left, 0), (self.height, self.width, channels))

        return jax.vmap(crop)(padded, keys)


@register
@dataclasses.dataclass(frozen=True)
class RandomFlip(Stage):
    """Mirror each image left-right (and/or top-bottom) with probability 1/2."""

    op: ClassVar[str] = "random_flip"
    augmentation: ClassVar[bool] = True
    horizontal: bool = True
    vertical: bool = False

    def in_spec(self, spec: ImageSpec) -> ImageSpec:
        self._require(spec, dtype="any")
        return spec

    @contract
    def __call__(  # type: ignore[override]  # an augmentation requires the key
        self, images: Shaped[Array, "b h w c"], key: PRNGKeyArray
    ) -> Shaped[Array, "b h w c"]:
        h_key, v_key = jax.random.split(key)
        batch = images.shape[0]
        if self.horizontal:
            flip = jax.random.bernoulli(h_key, shape=(batch, 1, 1, 1))
            images = jnp.where(flip, images[:, :, ::-1, :], images)
        if self.vertical:
            flip = jax.random.bernoulli(v_key, shape=(batch, 1, 1, 1))
            images = jnp.where(flip, images[:, ::-1, :, :], images)
        return images


@register
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


@register
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


@dataclasses.dataclass(frozen=True)
class Preprocess:
    """The configured stages, in order: one device-side function for the train step.

    Example:
        >>> pre = Preprocess((ToFloat(), Resize(16, 16)))
        >>> pre.in_spec(ImageSpec(8, 8, 1, "uint8", (0.0, 255.0))).shape
        (16, 16, 1)
    """

    stages: Sequence[Stage] = ()

    def __post_init__(self):
        object.__setattr__(self, "stages", tuple(self.stages))

    def flow(self, spec: ImageSpec) -> list[ImageSpec]:
        """The spec after each stage; the first broken boundary raises, named by position."""
        specs = []
        for index, stage in enumerate(self.stages):
            try:
                spec = stage.in_spec(spec)
            except ContractError as err:
                raise ContractError(
                    dataclasses.replace(d, stage=f"preprocess[{index}] {stage.op}")
                    for d in err.diagnostics
                ) from None
            specs.append(spec)
        return specs

    def in_spec(self, spec: ImageSpec) -> ImageSpec:
        """The spec the last stage hands on (`spec` itself when there are no stages)."""
        specs = self.flow(spec)
        return specs[-1] if specs else spec

    def __call__(
        self, images: Array, key: PRNGKeyArray | None = None, *, train: bool = False
    ) -> Array:
        """Apply the stages; augmentations only when `train` (and then `key` is required)."""
        for stage in self.stages:
            if stage.augmentation:
                if not train:
                    continue
                if key is None:
                    raise ValueError(f"{stage.op} is an augmentation: train=True needs a key")
                key, stage_key = jax.random.split(key)
                images = stage(images, stage_key)
            else:
                images = stage(images)
        return images
