"""The exported model: the inference function as a `jax.export` artifact, its weights, its contract.

A run folder's `model/` holds
- `model.jaxexport`: the whole inference function (stored images in, preprocessing
  included, class probabilities out, any batch size), serialized by `jax.export`
  with the weights inside. Serving it needs jax and numpy, nothing else:
  `jax.export.deserialize(bytearray(data)).call(images)`.
- `weights/`: an Orbax checkpoint of the parameters and batch statistics, which
  `ExportedModel` rebuilds the Flax model from.
- `contract.json`, written last, so a bundle that has one is whole: the
  stored-image spec the artifact accepts, the class names, the preprocessing
  stages and the model's layers, the platforms the artifact runs on, the
  resolved config, and the SHA-256 of every file it points at.

`ExportedModel` loads a bundle back. It refuses a contract of another format
version (`bundle.version`) and a file that differs from its checksum
(`bundle.corrupt`), and checks every input against the contract, so a wrong
image is a diagnostic, not a wrong answer.
"""

import dataclasses
import inspect
import json
import math
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
from beartype.vale import Is
from flax import nnx
from jax.sharding import SingleDeviceSharding

from typedpipe.contracts import (
    Accepts,
    ConfigError,
    ContractError,
    Diagnostic,
    ImageSpec,
    compare,
)
from typedpipe.contracts.keys import dataclass_schema, validate
from typedpipe.files import checksums, sha256, write_atomic
from typedpipe.models import MODELS, Classifier, build_model, split_params, validate_entry
from typedpipe.models.layers import LAYERS
from typedpipe.pipeline.check.preflight import compiled_bytes, device_memory
from typedpipe.pipeline.config import Config, parse_config
from typedpipe.pipeline.sources.decode import IMAGE_SUFFIXES, find_images, pixel_limit
from typedpipe.pipeline.sources.memory import budget, over_budget, size_text
from typedpipe.pipeline.stages import Preprocess
from typedpipe.pipeline.train.losses import loss_for

FORMAT = "typedpipe.model"
#: The contract's format version. 2: the `jax.export` artifact, the layer and
#: preprocessing sections, checksums. A bundle of any other version is refused.
VERSION = 2

CONTRACT = "contract.json"
ARTIFACT = "model.jaxexport"
WEIGHTS = "weights"

#: The platforms the artifact is lowered for. Lowering needs no accelerator, so a
#: model trained on a laptop is served on a GPU or TPU as it is; where a platform
#: cannot be lowered for, the artifact falls back to the CPU alone.
PLATFORMS = ("cpu", "cuda", "tpu")

#: How many of the most likely classes a prediction lists.
TOP = 3

#: Image files `predict_files` decodes and predicts at once.
PREDICT_CHUNK = 256

#: A contract.json larger than this is no contract typedpipe wrote.
MAX_CONTRACT_BYTES = 16 * 2**20

# Leave this share of device memory to the runtime (as the training preflight does).
_HEADROOM = 0.9

Weights = dict[str, nnx.State]


def export_model(
    directory: Path,
    config: Config,
    params: nnx.State,
    rest: nnx.State,
    spec: ImageSpec,
    class_names: tuple[str, ...],
    *,
    platforms: Sequence[str] = PLATFORMS,
) -> dict[str, Any] | None:
    """Write the bundle: the weights, the `jax.export` artifact, then `contract.json`.

    Every file is written whole or not at all, and `contract.json` last: a bundle
    whose contract exists is complete, and the contract's checksums cover the rest.

    Args:
        directory: the bundle folder (a run folder's `model/`).
        config: the resolved config the model was trained with.
        params, rest: the trained parameters and the rest of the model state.
        spec: the stored-image spec of the training data: what the artifact accepts.
        class_names: one name per class, in class-id order.
        platforms: the platforms to lower the artifact for (see `PLATFORMS`).

    Several processes call this together: each saves its part of the weights, and
    the first writes the rest.

    Returns:
        The contract, as written to `contract.json` (None on the other processes).
    """
    directory = Path(directory)
    primary = jax.process_index() == 0
    if primary:
        directory.mkdir(parents=True, exist_ok=True)
        # A contract left from an earlier export would vouch for files being replaced.
        (directory / CONTRACT).unlink(missing_ok=True)
    import orbax.checkpoint as ocp

    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(
            (directory / WEIGHTS).absolute(), {"params": params, "rest": rest}, force=True
        )
    if not primary:
        return None
    weights = {"params": _local(params), "rest": _local(rest)}

    model = _abstract_model(config)
    graph, _, _ = split_params(model)
    exported = _export(_inference(graph, config, weights), spec, platforms)
    write_atomic(directory / ARTIFACT, bytes(exported.serialize()))

    contract = {
        "format": FORMAT,
        "version": VERSION,
        "input": dataclasses.asdict(spec),
        "class_names": list(class_names),
        "preprocess": _preprocess_section(config, spec),
        "model": _model_section(config, model),
        "artifact": {
            "file": ARTIFACT,
            "platforms": list(exported.platforms),
            "input": _aval_json(exported.in_avals[0]),
            "output": _aval_json(exported.out_avals[0]),
            "jax": jax.__version__,
            "calling_convention_version": exported.calling_convention_version,
        },
        "files": _checksums(directory),
        "config": config.to_toml(),
    }
    write_atomic(directory / CONTRACT, json.dumps(contract, indent=2) + "\n")
    return contract


def _this_process_alone(ocp):
    """A checkpointer used by this process only: the bundle is written by one process of a
    run, and read by whoever loads it, with no other process to wait for."""
    me = jax.process_index()
    alone = ocp.options.MultiprocessingOptions(primary_host=me, active_processes={me})
    return ocp.StandardCheckpointer(multiprocessing_options=alone)


def _local(state: nnx.State) -> nnx.State:
    """The state on one local device: a replicated array may span devices and processes."""

    def one(x):
        if isinstance(x, jax.Array) and x.is_fully_replicated:
            return x.addressable_data(0)
        return x

    return jax.tree.map(one, state)


def _abstract_model(config: Config) -> Classifier:
    """The configured model in inference mode, built on shapes alone (no weights allocated)."""
    m = config.model
    model = nnx.eval_shape(
        lambda: build_model(m.name, m.input, m.num_classes, m.layers, rngs=nnx.Rngs(0))
    )
    model.eval()  # batch statistics are read, dropout is off
    return model


def _forward(
    graph: nnx.GraphDef, preprocess: Preprocess
) -> Callable[[Weights, jax.Array], jax.Array]:
    """`(weights, stored images) -> logits`: the preprocessing stages, then the model."""

    def logits(weights: Weights, images: jax.Array) -> jax.Array:
        model = nnx.merge(graph, weights["params"], weights["rest"])
        return model(preprocess(images, train=False))

    return logits


def _inference(
    graph: nnx.GraphDef, config: Config, weights: Weights
) -> Callable[[jax.Array], jax.Array]:
    """`stored images -> class probabilities`, the weights closed over as constants."""
    logits = _forward(graph, Preprocess(config.preprocess))

    def probabilities(images: jax.Array) -> jax.Array:
        return jax.nn.softmax(logits(weights, images), axis=-1)

    return probabilities


def _export(
    probabilities: Callable[[jax.Array], jax.Array], spec: ImageSpec, platforms: Sequence[str]
) -> jax.export.Exported:
    """`probabilities` for a batch of any size, lowered for `platforms`, else for the CPU."""
    (batch,) = jax.export.symbolic_shape("b")
    images = jax.ShapeDtypeStruct((batch, spec.height, spec.width, spec.channels), spec.dtype)
    try:
        return jax.export.export(jax.jit(probabilities), platforms=tuple(platforms))(images)
    except Exception:  # a platform without lowering rules for some op: the CPU alone
        if tuple(platforms) == ("cpu",):
            raise
        return jax.export.export(jax.jit(probabilities), platforms=("cpu",))(images)


def _aval_json(aval) -> dict[str, Any]:
    """A shape with a symbolic batch as JSON: `{"shape": ["b", 8, 8, 1], "dtype": "uint8"}`."""
    return {
        "shape": [d if isinstance(d, int) else str(d) for d in aval.shape],
        "dtype": str(aval.dtype),
    }


def _preprocess_section(config: Config, spec: ImageSpec) -> list[dict[str, Any]]:
    """Each stage with its settings and the spec it hands on at inference."""
    section = []
    for stage in config.preprocess:
        entry = {"op": stage.op, **dataclasses.asdict(stage), "augmentation": stage.augmentation}
        if stage.augmentation:
            entry["output"] = "skipped at inference"
        else:
            spec = stage.in_spec(spec)
            entry["output"] = spec.describe()
        section.append(entry)
    return section


def _model_section(config: Config, model: Classifier) -> dict[str, Any]:
    """The architecture as data: every layer with all its settings, output shape and size."""
    m = config.model
    entries = MODELS.get(m.name)(m.input, m.num_classes, m.layers)
    shape, layers = tuple(m.input), []
    for index, (entry, layer) in enumerate(zip(entries, model.layers, strict=True)):
        _, settings, _ = validate_entry(entry, index)
        kind = entry["type"]
        shape = layer.output_shape(shape)
        layers.append(
            {
                "type": kind,
                "name": settings.pop("name"),
                **_defaults(kind),
                **settings,
                "output": list(shape),
                "params": _size(nnx.state(layer, nnx.Param)),
            }
        )
    return {
        "name": m.name,
        "input": list(m.input),
        "input_range": list(m.input_range),
        "num_classes": m.num_classes,
        "layers": layers,
        "params": _size(nnx.state(model, nnx.Param)),
    }


def _defaults(kind: str) -> dict[str, Any]:
    """A layer type's config keys that have defaults, with them."""
    cls = LAYERS.get(kind)
    keys = cls.params()
    return {
        name: parameter.default
        for name, parameter in inspect.signature(cls.__init__).parameters.items()
        if name in keys and parameter.default is not inspect.Parameter.empty
    }


def _size(state: nnx.State) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state))


def _checksums(directory: Path) -> dict[str, str]:
    """The SHA-256 of the artifact and of every file under `weights/`, by relative path."""
    weights = checksums(directory / WEIGHTS)
    return {ARTIFACT: sha256(directory / ARTIFACT)} | {
        f"{WEIGHTS}/{name}": digest for name, digest in weights.items()
    }


def _bundle_fault(code: str, directory: Path, message: str, **fields: Any) -> ContractError:
    return ContractError(Diagnostic(code, message, stage="model bundle", **fields))


def read_contract(directory: Path) -> dict[str, Any]:
    """A bundle's `contract.json`, once its format, version and checksums hold.

    Raises:
        ContractError: `bundle.version`, a contract of another format or version;
            `bundle.corrupt`, an unreadable contract or a file that is missing or
            differs from its checksum (every such file is listed).
    """
    directory = Path(directory)
    retrain = "train the run again (typedpipe train CONFIG --out RUN_DIR) to export it anew"
    try:
        size = (directory / CONTRACT).stat().st_size
        if size > MAX_CONTRACT_BYTES:
            raise ValueError(f"it is {size_text(size)}, more than {size_text(MAX_CONTRACT_BYTES)}")
        contract = json.loads((directory / CONTRACT).read_text(encoding="utf-8"))
        if not isinstance(contract, dict):
            raise ValueError("it is not a JSON object")
    except (ValueError, UnicodeDecodeError, RecursionError) as err:
        raise _bundle_fault(
            "bundle.corrupt",
            directory,
            f"{directory / CONTRACT} cannot be read: {err}",
            expected="a JSON contract written by typedpipe",
            got=type(err).__name__,
            hint=retrain,
            items=(str(directory / CONTRACT),),
        ) from None
    found = (contract.get("format"), contract.get("version"))
    if found != (FORMAT, VERSION):
        raise _bundle_fault(
            "bundle.version",
            directory,
            f"{directory} holds a model bundle this typedpipe cannot read",
            expected=f"format {FORMAT!r} version {VERSION}",
            got=f"format {found[0]!r} version {found[1]!r}",
            hint=f"use the typedpipe that wrote it, or {retrain}",
        )
    files = contract.get("files")
    if not isinstance(files, dict) or ARTIFACT not in files:
        files = {ARTIFACT: None}  # a contract that lists nothing vouches for nothing
    faults = []
    for name, digest in files.items():
        if not isinstance(digest, str | None) or not name:
            faults.append(f"{name!r}: not a file name with a SHA-256")
            continue
        path = directory / name
        if Path(name).is_absolute() or ".." in Path(name).parts:
            faults.append(f"{name}: outside the bundle")
        elif not path.is_file():
            faults.append(f"{name}: missing")
        elif sha256(path) != digest:
            faults.append(f"{name}: differs from its checksum")
    if faults:
        raise _bundle_fault(
            "bundle.corrupt",
            directory,
            f"{len(faults)} file(s) of the model bundle {directory} are not as exported",
            expected="every file as its SHA-256 in contract.json says",
            got=f"{len(faults)} file(s) changed or missing",
            hint=f"restore the bundle from a copy, or {retrain}",
            items=tuple(faults),
        )
    return contract


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else type(err).__name__


Side = Annotated[int, Is[lambda n: 0 < n <= 65536], "an int in [1, 65536]"]
StoredDtype = Literal[
    "uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64",
    "float16", "float32", "float64",
]  # fmt: skip


@dataclasses.dataclass(frozen=True)
class _Input:
    """The stored-image spec a contract's `input` must be: sizes under the pixel limit."""

    height: Side
    width: Side
    channels: Annotated[int, Is[lambda n: 0 < n <= 4096], "an int in [1, 4096]"]
    dtype: StoredDtype
    value_range: tuple[float, float] | None
    layout: Literal["nhwc"] = "nhwc"


def _contract_fields(
    contract: dict[str, Any], directory: Path
) -> tuple[Config, ImageSpec, tuple[str, ...], tuple[str, ...]]:
    """The config, input spec, class names and platforms of a contract, each validated:
    a contract is data from a file, and a crafted one must be refused, not obeyed.

    Raises:
        ContractError: `bundle.corrupt`, listing every field that is not as typedpipe writes it.
    """
    faults: list[str] = []
    config = None
    text = contract.get("config")
    if not isinstance(text, str):
        faults.append("config: not the TOML text of a config")
    else:
        try:
            config = parse_config(text, source="contract.json config")
        except ConfigError as err:
            faults.extend(f"config: {d.message}" for d in err.diagnostics)
    spec = None
    raw = contract.get("input")
    if not isinstance(raw, dict):
        faults.append("input: not a stored-image spec")
    else:
        values, found = validate(dataclass_schema(_Input), raw, where="input")
        faults.extend(f"input: {d.message}" for d in found)
        if not found:
            spec = ImageSpec(**values)
            if spec.height * spec.width > pixel_limit():
                faults.append(
                    f"input: {spec.height}x{spec.width} is more than {pixel_limit():,} pixels"
                )
    names = contract.get("class_names")
    if not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
        faults.append("class_names: not a list of names")
    elif config is not None and len(names) != config.model.num_classes:
        faults.append(f"class_names: {len(names)} names for {config.model.num_classes} classes")
    artifact = contract.get("artifact")
    platforms = artifact.get("platforms") if isinstance(artifact, dict) else None
    if not (isinstance(platforms, list) and all(isinstance(p, str) for p in platforms)):
        faults.append("artifact.platforms: not a list of platform names")
    if faults or config is None or spec is None:
        raise _bundle_fault(
            "bundle.corrupt",
            directory,
            f"{directory / CONTRACT} is not a contract typedpipe writes: {len(faults)} field(s) "
            "are malformed or out of range",
            expected="a contract written by typedpipe train",
            got=faults[0] if faults else "malformed",
            hint="train the run again (typedpipe train CONFIG --out RUN_DIR) to export it anew",
            items=tuple(faults),
        )
    return config, spec, tuple(names), tuple(platforms)  # type: ignore[arg-type]


def _refuse_large_weights(weights: Weights, directory: Path) -> None:
    """Weights that would not fit in host memory, refused before the restore allocates them."""
    need = sum(math.prod(x.shape) * x.dtype.itemsize for x in jax.tree.leaves(weights))
    if need > budget():
        raise ContractError(
            over_budget(
                f"the weights of the model bundle {directory}",
                need,
                "serve the model on a host with more memory, or train a smaller one",
                stage="model bundle",
            )
        )


@dataclasses.dataclass(frozen=True)
class Prediction:
    """One image file's class, its probability, and the most likely classes."""

    file: str
    class_id: int
    name: str
    probability: float
    top: tuple[tuple[int, str, float], ...]

    def to_json(self) -> dict[str, Any]:
        """`{"file", "class", "name", "probability", "top": [{"class", "name", "probability"}]}`."""
        return {
            "file": self.file,
            "class": self.class_id,
            "name": self.name,
            "probability": self.probability,
            "top": [{"class": c, "name": n, "probability": p} for c, n, p in self.top],
        }


class ExportedModel:
    """A trained classifier loaded from its bundle, its contract and checksums checked.

    Example:
        >>> model = ExportedModel("runs/digits-cnn/model")
        >>> model.predict(images).shape   # images as stored: uint8 (n, 8, 8, 1)
        (n, 10)

    Raises:
        ContractError: `bundle.version` or `bundle.corrupt` (see `read_contract`).
    """

    def __init__(self, directory: str | Path):
        directory = Path(directory)
        self.contract = read_contract(directory)
        self.config, self.spec, self.class_names, self.platforms = _contract_fields(
            self.contract, directory
        )
        graph, params, rest = split_params(_abstract_model(self.config))
        weights = {"params": params, "rest": rest}
        _refuse_large_weights(weights, directory)
        here = SingleDeviceSharding(jax.devices()[0])
        target = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=here), weights
        )
        import orbax.checkpoint as ocp

        try:
            with ocp.StandardCheckpointer() as checkpointer:
                self._weights = checkpointer.restore((directory / WEIGHTS).absolute(), target)
        except Exception as err:  # weights that do not fit the contract's model
            raise _bundle_fault(
                "bundle.corrupt",
                directory,
                f"the weights of {directory} do not restore into the model its contract "
                f"describes: {type(err).__name__}",
                expected="weights written with the contract",
                got=_first_line(err),
                hint="train the run again (typedpipe train CONFIG --out RUN_DIR) to export it anew",
                items=(str(directory / WEIGHTS),),
            ) from None
        forward = _forward(graph, Preprocess(self.config.preprocess))
        self._logits = jax.jit(forward)
        self._probabilities = jax.jit(
            lambda weights, images: jax.nn.softmax(forward(weights, images), axis=-1)
        )
        self._compiled: dict[tuple[str, int], Any] = {}

    def _run(self, which: Literal["logits", "probabilities"], images: np.ndarray) -> jax.Array:
        """`which` on one batch, compiled once per batch size and refused (`memory.exceeds`)
        where the compiled program needs more memory than the device has."""
        key = (which, len(images))
        if key not in self._compiled:
            fn = self._logits if which == "logits" else self._probabilities
            abstract = jax.ShapeDtypeStruct(images.shape, images.dtype)
            compiled = fn.lower(self._weights, abstract).compile()
            need = compiled_bytes(compiled) or 0
            limit, where = device_memory()
            if need > limit * _HEADROOM:
                fits = max(1, int(len(images) * limit * _HEADROOM / need))
                raise ContractError(
                    Diagnostic(
                        "memory.exceeds",
                        f"the model needs {size_text(need)} for a batch of {len(images)} "
                        f"{self.spec.describe()} images; {where} is {size_text(limit)}",
                        stage="model bundle",
                        expected=f"at most {size_text(limit * _HEADROOM)}",
                        got=size_text(need),
                        hint=f"pass fewer images at once (batch_size = {fits})"
                        if len(images) > 1
                        else "this model's input is too large for this device",
                    )
                )
            self._compiled[key] = compiled
        return self._compiled[key](self._weights, images)

    def check(self, images: np.ndarray) -> None:
        """Raise a ContractError unless `images` match the stored-image contract."""
        shape = tuple(images.shape)
        self._check(shape, str(images.dtype), f"{images.dtype} {' '.join(map(str, shape))}")

    def check_spec(self, spec: ImageSpec) -> None:
        """Raise a ContractError unless data of `spec` matches the contract: before any pixel."""
        shape = (0, spec.height, spec.width, spec.channels)
        self._check(shape, spec.dtype, spec.describe(), what="the data")

    def _check(
        self, shape: tuple[int, ...], dtype: str, got: str, what: str = "the images"
    ) -> None:
        want = self.spec
        accepts = Accepts(want.dtype, want.height, want.width, want.channels)
        found = compare(accepts, shape, dtype)
        if not found:
            return
        hints = {
            "shape.rank": "pass a batch: (n, height, width, channels)",
            "shape.layout": "pass channels-last images: images.transpose(0, 2, 3, 1)",
            "dtype.input": f"pass {want.dtype} pixels, as the model was trained on",
            "shape.spatial": f"resize the images to {want.height}x{want.width}",
            "shape.channels": f"convert the images to {want.channels} channel(s)",
        }
        raise ContractError(
            Diagnostic(
                mismatch.code,
                f"{what} {mismatch.message}: they do not match the model's input contract",
                stage="input",
                expected=want.describe(),
                got=got,
                hint=hints[mismatch.code],
            )
            for mismatch in found
        )

    def predict(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Class probabilities `(n, num_classes)` for images as stored `(n, h, w, c)`."""
        self.check(images)
        return (
            np.concatenate(
                [
                    np.asarray(self._run("probabilities", images[start : start + batch_size]))
                    for start in range(0, len(images), batch_size)
                ]
            )
            if len(images)
            else np.zeros((0, len(self.class_names)), np.float32)
        )

    def read_image(self, path: str | Path) -> np.ndarray:
        """Decode one image file the way the model's data was stored: its channels and size.

        Raises:
            ContractError: `data.corrupt` naming the file, when it cannot be decoded;
                `data.too_large` when it declares more pixels than `check` accepts;
                `data.lossy` when its 16-bit pixels would saturate; a `shape.*` or
                `dtype.input` code when it decodes off the contract.
        """
        from typedpipe.pipeline.sources.decode import Lossy, TooLarge, decode

        mode = {1: "gray", 3: "rgb"}.get(self.spec.channels, "keep")
        size = (self.spec.height, self.spec.width)
        try:
            image = decode(Path(path), mode, size)
        except TooLarge as err:  # the limit check and training apply, before any decode
            raise ContractError(
                Diagnostic(
                    "data.too_large",
                    f"{path} declares {err}; refused before decoding",
                    stage="input",
                    expected=f"at most {pixel_limit():,} pixels",
                    got="a possible pixel bomb",
                    hint="shrink the image with a trusted tool first",
                    items=(str(path),),
                )
            ) from None
        except Lossy as err:
            raise ContractError(
                Diagnostic(
                    "data.lossy",
                    f"{path}: {err}",
                    stage="input",
                    expected=f"an image that decodes to {self.spec.describe()} without loss",
                    got=str(err),
                    hint="convert it to 8 bits per channel with a trusted tool first",
                    items=(str(path),),
                )
            ) from None
        except Exception as err:  # any decode failure is reported with the file
            raise ContractError(
                Diagnostic(
                    "data.corrupt",
                    f"{path} cannot be decoded: {type(err).__name__}: {err}",
                    stage="input",
                    expected="a readable image file",
                    got=type(err).__name__,
                    hint="pass PNG, JPEG, BMP, GIF, WebP or TIFF files",
                    items=(str(path),),
                )
            ) from None
        try:
            self.check(image[None])
        except ContractError as err:
            raise ContractError(
                dataclasses.replace(d, message=f"{path}: {d.message}", items=(str(path),))
                for d in err.diagnostics
            ) from None
        return image

    def read_images(self, paths: Iterable[str | Path]) -> np.ndarray:
        """Decode image files the way the model's data was stored: its channels and size.

        Raises:
            ContractError: every file that cannot be decoded to the contract, named.
        """
        images: list[np.ndarray] = []
        faults: list[Diagnostic] = []
        for path in paths:
            try:
                images.append(self.read_image(path))
            except ContractError as err:
                faults.extend(err.diagnostics)
        if faults:
            raise ContractError(faults)
        return np.stack(images)

    def predict_files(
        self, paths: Iterable[str | Path], top: int = TOP
    ) -> tuple[list[Prediction], list[Diagnostic]]:
        """Predict every image file, a folder standing for every image file under it (sorted).

        A file that cannot be read to the contract gets a diagnostic naming it;
        the others are predicted all the same.

        Files are decoded and predicted `PREDICT_CHUNK` at a time: host memory does not
        grow with the number of files.

        Returns:
            The predictions, in file order, and a diagnostic per file that failed.
        """
        files, faults = image_files(paths)
        predictions: list[Prediction] = []
        for start in range(0, len(files), PREDICT_CHUNK):
            read, images = [], []
            for path in files[start : start + PREDICT_CHUNK]:
                try:
                    images.append(self.read_image(path))
                    read.append(path)
                except ContractError as err:
                    faults.extend(err.diagnostics)
            if not images:
                continue
            probabilities = self.predict(np.stack(images))
            for path, row in zip(read, probabilities, strict=True):
                best = [int(i) for i in np.argsort(-row, kind="stable")[:top]]
                ranked = tuple((i, self.class_names[i], float(row[i])) for i in best)
                predictions.append(Prediction(str(path), *ranked[0], ranked))
        return predictions, faults

    def class_ids(self, ids: np.ndarray, names: Sequence[str] = ()) -> np.ndarray:
        """The data's class ids as the model's: by name where the data names its classes.

        Raises:
            ContractError: `labels.range`, a class the model does not have.
        """
        ids = np.asarray(ids)
        if names and set(names) <= set(self.class_names):
            ours = np.array([self.class_names.index(n) for n in names], np.int32)
            return ours[ids]
        outside = np.flatnonzero((ids < 0) | (ids >= len(self.class_names)))
        if len(outside):
            raise ContractError(
                Diagnostic(
                    "labels.range",
                    f"{len(outside)} label(s) name a class the model does not have",
                    stage="labels",
                    expected=f"class ids in [0, {len(self.class_names)})",
                    got=f"ids from {int(ids.min())} to {int(ids.max())}",
                    hint="evaluate on data of the classes the model was trained on",
                    items=tuple(map(str, outside)),
                    total_items=len(outside),
                )
            )
        return ids.astype(np.int32)

    def evaluate(self, images: np.ndarray, class_ids: np.ndarray) -> dict[str, float | None]:
        """Accuracy and mean cross-entropy (the training loss) on `images` with their class ids."""
        self.check(images)
        loss = loss_for("int", len(self.class_names))
        correct, loss_sum = 0, 0.0
        for start in range(0, len(images), 256):
            logits = self._run("logits", images[start : start + 256])
            ids = jnp.asarray(class_ids[start : start + 256], jnp.int32)
            correct += int((logits.argmax(-1) == ids).sum())
            loss_sum += float(loss(logits, ids).sum())
        count = len(class_ids)
        return {
            "accuracy": correct / count if count else None,
            "loss": loss_sum / count if count else None,
            "images": count,
        }


def image_files(paths: Iterable[str | Path]) -> tuple[list[Path], list[Diagnostic]]:
    """The files named, a folder replaced by every image file under it, sorted.

    Returns:
        The files, and a diagnostic per folder that holds no image file
        (`data.empty`) and per entry that cannot be read as a file: a dangling or
        looping link (`data.link`), no permission (`data.permission`), a FIFO or
        device (`data.special`).
    """
    files: list[Path] = []
    faults: list[Diagnostic] = []
    for path in map(Path, paths):
        if not path.is_dir():
            if path.exists() and not path.is_file():  # a FIFO would block the decode
                faults.append(_unusable_input(path, "data.special", "not a regular file"))
            else:
                files.append(path)
            continue
        found, unusable = find_images([path])
        codes = {"link": "data.link", "permission": "data.permission", "special": "data.special"}
        faults.extend(_unusable_input(u.path, codes[u.kind], u.why) for u in unusable)
        if not found and not unusable:
            faults.append(
                Diagnostic(
                    "data.empty",
                    f"the folder {path} holds no image file",
                    stage="input",
                    expected=f"files ending in {', '.join(sorted(IMAGE_SUFFIXES))}",
                    got="none",
                    hint="pass image files, or a folder that holds some",
                    items=(str(path),),
                )
            )
        files.extend(found)
    return files, faults


def _unusable_input(path: Path, code: str, why: str) -> Diagnostic:
    hints = {
        "data.link": "restore the link's target, or remove the link",
        "data.permission": "grant read access to it, or leave it out",
        "data.special": "pass image files: a FIFO, socket or device is never an image",
    }
    return Diagnostic(
        code,
        f"{path}: {why}",
        stage="input",
        expected="a readable image file",
        got=why,
        hint=hints[code],
        items=(str(path),),
    )
