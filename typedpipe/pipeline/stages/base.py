"""The stage contract and the ordered pipeline of stages.

A stage is a small frozen dataclass that pairs `in_spec(spec) -> spec` (its
contract as data, checked symbolically before any array exists) with a
`__call__` whose jaxtyping annotations beartype enforces while JAX traces.
Stages run on the device, batched (`b h w c`), inside the jitted step.
Augmentations take an explicit PRNG key and are skipped at evaluation, or
replaced there by their deterministic counterpart (`Stage.at_inference`).
"""

import dataclasses
from collections.abc import Sequence
from typing import Annotated, Any, ClassVar, Literal

import jax
from beartype.vale import Is
from jaxtyping import Array, PRNGKeyArray

from typedpipe.contracts import (
    Accepts,
    ConfigError,
    ContractError,
    Diagnostic,
    ImageSpec,
    compare,
    hints,
)
from typedpipe.contracts.diagnostics import config_value
from typedpipe.registry import Registry

#: A factor pixels are multiplied or divided by.
Positive = Annotated[float, Is[lambda x: x > 0], "a number > 0"]
#: A height or width a stage produces: bounded, so that no value overflows a shape.
Side = Annotated[int, Is[lambda n: 0 < n <= 65536], "an int in [1, 65536]"]
#: Padding added on each side.
Padding = Annotated[int, Is[lambda n: 0 <= n <= 65536], "an int in [0, 65536]"]
#: A `[lo, hi]` pair; its bounds and order are checked by the stage (`require_pair`),
#: which knows the default that fixes it.
Pair = Annotated[tuple[float, float], "a list [lo, hi] of 2 numbers"]
#: A probability, or a bound on a random factor that is a share of the full scale.
Unit = Annotated[float, Is[lambda x: 0.0 <= x <= 1.0], "a number in [0, 1]"]

# Values may exceed [0, 1] by this much before a stage that wants [0, 1] pixels refuses
# them: bilinear resampling and float rounding are not faults.
_UNIT_SLACK = 1e-3

#: Every preprocessing op a config can name: `[[preprocess]] op = "..."`.
STAGES: "Registry[type[Stage]]" = Registry(
    "preprocessing op", key="op", table="preprocess", code="config.unknown_op"
)


def register_stage(cls: "type[Stage]") -> "type[Stage]":
    """Make a stage class usable from a config as `op = cls.op`; a name registers once.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxtyping import UInt8
        >>> from typedpipe.contracts import contract
        >>> @register_stage
        ... @dataclasses.dataclass(frozen=True)
        ... class Invert(Stage):
        ...     op: ClassVar[str] = "invert"
        ...
        ...     def in_spec(self, spec):
        ...         self._require(spec, dtype="int")
        ...         return spec
        ...
        ...     @contract
        ...     def __call__(
        ...         self, images: UInt8[Array, "b h w c"], key=None
        ...     ) -> UInt8[Array, "b h w c"]:
        ...         return jnp.uint8(255) - images
        >>> make_stage("invert")(jnp.zeros((1, 2, 2, 1), jnp.uint8))[0, :, :, 0]
        Array([[255, 255],
               [255, 255]], dtype=uint8)
    """
    STAGES.register(cls.op, cls)
    return cls


def make_stage(op: str, **params: Any) -> "Stage":
    """Build a registered stage by name, e.g. `make_stage("resize", height=32, width=32)`."""
    return STAGES.get(op)(**params)


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

    def at_inference(self) -> "Stage | None":
        """The stage that stands in for this one at inference: itself, or, for an
        augmentation, None (skipped) unless it has a deterministic counterpart (the
        center crop a random resized crop stands for)."""
        return None if self.augmentation else self

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
        accepts = Accepts(dtype, channels=channels)
        if spec.layout != "nhwc":
            self._fail(
                "shape.layout",
                "stages expect channels-last images",
                spec,
                accepts.describe(),
                hints.layout(),
            )
        batch_shape = (1, spec.height, spec.width, spec.channels)
        for found in compare(accepts, batch_shape, spec.dtype):
            self._fail(
                found.code,
                f"the batch reaching {self.op} {found.message}",
                spec,
                accepts.describe(),
                hints.fix(found.code, accepts, batch_shape, spec.dtype),
            )

    def _require_gray_or_rgb_pixels(self, spec: ImageSpec) -> ImageSpec:
        """The contract of a colour op on [0, 1] pixels: 1 or 3 channels, values in [0, 1];
        what it hands on (the same images, in [0, 1])."""
        if spec.channels not in (1, 3):
            self._fail(
                "shape.channels",
                f"{self.op} takes grayscale or RGB images, not {spec.channels} channels",
                spec,
                "float b h w 3 or float b h w 1",
                hints.channels(3, spec.channels),
            )
        self._require_unit_range(spec)
        return dataclasses.replace(spec, value_range=(0.0, 1.0))

    def _require_unit_range(self, spec: ImageSpec, what: str = "") -> None:
        """Refuse values known to leave [0, 1], where `what` (by default the stage) is
        defined: colour ops (dm-pix's, HSV), statistics of [0, 1] pixels."""
        if spec.value_range is None:
            return
        lo, hi = spec.value_range
        if lo >= -_UNIT_SLACK and hi <= 1.0 + _UNIT_SLACK:
            return
        onto = hints.onto(spec.value_range, (0.0, 1.0), spec.channels)
        self._fail(
            "range.input",
            f"{what or self.op} works on pixels in [0, 1], but values in [{lo:g}, {hi:g}] reach it",
            spec,
            "float b h w c in [0, 1]",
            f"add {hints.stage_line('normalize', **onto)} before {hints.THIS_STAGE}",
        )


def spec_of_batch(images: Array) -> ImageSpec:
    """The spec of a traced batch, for constraints an annotation cannot state (h >= crop)."""
    _, height, width, channels = images.shape
    return ImageSpec(height, width, channels, str(images.dtype), value_range=None)


def require_positive(stage: Stage, **values: float) -> None:
    """A `config.value` error for the first of `values` that is not > 0; its fix is the
    field's default where it has one."""
    defaults = {f.name: f.default for f in dataclasses.fields(stage)}
    for key, value in values.items():
        if not value > 0:
            default = defaults.get(key, dataclasses.MISSING)
            raise ConfigError(
                config_value(
                    f"{stage.op}: {key} must be > 0",
                    stage=stage.op,
                    expected=f"{key} > 0",
                    got=f"{key} = {value}",
                    hint=f"{key} = {hints.toml(default)} in {hints.THIS_STAGE} (the default)"
                    if isinstance(default, int | float) and default > 0
                    else f"set {key} to a positive value",
                )
            )


def _default(stage: Stage, key: str) -> Any:
    return next(f.default for f in dataclasses.fields(stage) if f.name == key)


def _out_of_bounds(stage: Stage, key: str, bound: str, got: object, default: object) -> ConfigError:
    return ConfigError(
        config_value(
            f"{stage.op}: {key} must be {bound}",
            stage=stage.op,
            expected=f"{key}: {bound}",
            got=f"{key} = {hints.toml(got)}",
            hint=f"{hints.assign(hints.THIS_STAGE, **{key: default})} (the default)",
        )
    )


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def require_range(
    stage: Stage, key: str, low: float, high: float, *, open_low=False, integer=False
) -> None:
    """A `config.value` error unless `key` is a number (an int where `integer`) in
    [low, high] (`low` excluded when `open_low`), for stages built in code as for those a
    config builds; its fix is the field's default."""
    value = getattr(stage, key)
    kind = isinstance(value, int) if integer else True
    if _is_number(value) and kind and (value > low if open_low else value >= low) and value <= high:
        return
    bound = f"{'an int' if integer else 'a number'} in {'(' if open_low else '['}{low:g}, {high:g}]"
    raise _out_of_bounds(stage, key, bound, value, _default(stage, key))


def require_pair(stage: Stage, key: str, low: float, high: float, *, open_low=False) -> None:
    """A `config.value` error unless the pair `key` is [lo, hi] with lo <= hi, both in
    [low, high] (`low` excluded when `open_low`); its fix is the field's default."""
    pair = tuple(getattr(stage, key)) if isinstance(getattr(stage, key), tuple | list) else ()
    if len(pair) == 2 and all(_is_number(v) for v in pair):
        lo, hi = pair
        if (lo > low if open_low else lo >= low) and lo <= hi <= high:
            return
    bound = f"[lo, hi] with {low:g} {'<' if open_low else '<='} lo <= hi <= {high:g}"
    got = list(pair) if pair else getattr(stage, key)
    raise _out_of_bounds(stage, key, bound, got, list(_default(stage, key)))


def _params(stage: Stage) -> dict[str, Any]:
    """A stage's config keys as a hint writes them: those set otherwise than by default,
    and a to_float's scale always (it is what the stage is for)."""
    defaults = {f.name: f.default for f in dataclasses.fields(stage)}
    return {
        key: value
        for key, value in dataclasses.asdict(stage).items()
        if key == "scale" or value != defaults[key]
    }


@dataclasses.dataclass(frozen=True)
class Preprocess:
    """The configured stages, in order: one device-side function for the train step.

    Example:
        >>> pre = Preprocess((make_stage("to_float"), make_stage("resize", height=16, width=16)))
        >>> pre.in_spec(ImageSpec(8, 8, 1, "uint8", (0.0, 255.0))).shape
        (16, 16, 1)
        >>> import jax.numpy as jnp
        >>> pre(jnp.full((2, 8, 8, 1), 255, jnp.uint8)).max()
        Array(1., dtype=float32)
    """

    stages: Sequence[Stage] = ()

    def __post_init__(self):
        object.__setattr__(self, "stages", tuple(self.stages))

    def flow(self, spec: ImageSpec, *, train: bool = True) -> list[ImageSpec]:
        """The spec after each stage (at inference, `train=False`: after the stage that
        stands in for it, `spec` itself where it is skipped); the first broken boundary
        raises, named by position."""
        specs = []
        for index, stage in enumerate(self.stages):
            acting = stage if train else stage.at_inference()
            try:
                spec = acting.in_spec(spec) if acting is not None else spec
            except ContractError as err:
                raise ContractError(
                    dataclasses.replace(
                        d,
                        stage=f"preprocess[{index}] {stage.op}",
                        hint=self._fix(index, d, spec),
                    )
                    for d in err.diagnostics
                ) from None
            specs.append(spec)
        return specs

    def _place(self, index: int) -> str:
        return f"[[preprocess]] #{index + 1} ({self.stages[index].op})"

    def _fix(self, index: int, diagnostic: Diagnostic, spec: ImageSpec) -> str:
        """A stage's hint, its "this stage" named; where integer pixels reach a stage that
        wants floats, the to_float stage is put before it (moved, if it comes later)."""
        stage = self.stages[index]
        integers = not spec.is_float and spec.layout == "nhwc"
        wants_float = diagnostic.code == "dtype.input" and integers
        size = {k: v for k, v in _params(stage).items() if k in ("height", "width")}
        crop_too_big = diagnostic.code == "shape.spatial" and integers and len(size) == 2
        if not (wants_float or crop_too_big):
            return diagnostic.hint.replace(hints.THIS_STAGE, self._place(index))
        later = [k for k in range(index + 1, len(self.stages)) if self.stages[k].op == "to_float"]
        steps = [f"remove {self._place(later[0])}"] if later else []
        to_float = (
            hints.stage_line("to_float", **_params(self.stages[later[0]]))
            if later
            else hints.to_float(spec.dtype)
        )
        steps.append(f"add {to_float} before {self._place(index)}")
        if crop_too_big:  # a crop larger than the image: resize up to it first, in floats
            resize = hints.stage_line("resize", **size)
            steps.append(f"add {resize} before [[preprocess]] #{index + 2} ({stage.op})")
        return " and ".join(steps)

    def in_spec(self, spec: ImageSpec, *, train: bool = True) -> ImageSpec:
        """The spec the last stage hands on (`spec` itself when there are no stages), in
        training or (`train=False`) at inference."""
        specs = self.flow(spec, train=train)
        return specs[-1] if specs else spec

    def __call__(
        self, images: Array, key: PRNGKeyArray | None = None, *, train: bool = False
    ) -> Array:
        """Apply the stages; augmentations only when `train` (and then `key` is required),
        at inference their deterministic counterparts where they have one."""
        for stage in self.stages:
            if not train:
                acting = stage.at_inference()
                if acting is not None:
                    images = acting(images)
            elif stage.augmentation:
                if key is None:
                    raise ValueError(f"{stage.op} is an augmentation: train=True needs a key")
                key, stage_key = jax.random.split(key)
                images = stage(images, stage_key)
            else:
                images = stage(images)
        return images
