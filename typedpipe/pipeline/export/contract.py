"""The bundle's `contract.json`: its on-disk schema, read back and validated.

The contract is data from a file, so reading it trusts nothing: the format and
version, the checksum of every file it vouches for, and each field it is rebuilt
from are checked, and a crafted contract is refused (`bundle.corrupt`), never obeyed.
"""

import dataclasses
import json
from pathlib import Path
from typing import Annotated, Any, Literal

from beartype.vale import Is

from typedpipe.contracts import ConfigError, ContractError, Diagnostic, ImageSpec
from typedpipe.contracts.keys import dataclass_schema, validate
from typedpipe.files import checksums, sha256
from typedpipe.memory import size_text
from typedpipe.pipeline.config import Config, parse_config
from typedpipe.pipeline.export.jaxexport import FILE as ARTIFACT
from typedpipe.pipeline.sources.decode import pixel_limit

FORMAT = "typedpipe.model"
#: The contract's format version, and the oldest this typedpipe still reads.
#: 2: the `jax.export` artifact, the layer and preprocessing sections, checksums.
#: 3: `artifacts`, one section per registered artifact format (2's `artifact` kept).
VERSION = 3
OLDEST_READABLE = 2

CONTRACT = "contract.json"
WEIGHTS = "weights"

#: A contract.json larger than this is no contract typedpipe wrote.
MAX_CONTRACT_BYTES = 16 * 2**20

RETRAIN = "train the run again (typedpipe train CONFIG --out RUN_DIR) to export it anew"


def bundle_fault(code: str, message: str, **fields: Any) -> ContractError:
    """A `bundle.*` fault, reported at the model bundle."""
    return ContractError(Diagnostic(code, message, stage="model bundle", **fields))


def file_checksums(directory: Path, artifacts: tuple[str, ...]) -> dict[str, str]:
    """The SHA-256 of each artifact file and of every file under `weights/`, by relative path."""
    weights = checksums(directory / WEIGHTS)
    return {name: sha256(directory / name) for name in artifacts} | {
        f"{WEIGHTS}/{name}": digest for name, digest in weights.items()
    }


def read_contract(directory: Path) -> dict[str, Any]:
    """A bundle's `contract.json`, once its format, version and checksums hold.

    Raises:
        ContractError: `bundle.version`, a contract of another format, or of a version
            outside `OLDEST_READABLE..VERSION`; `bundle.corrupt`, an unreadable
            contract or a file that is missing or differs from its checksum (every
            such file is listed).
    """
    directory = Path(directory)
    try:
        size = (directory / CONTRACT).stat().st_size
        if size > MAX_CONTRACT_BYTES:
            raise ValueError(f"it is {size_text(size)}, more than {size_text(MAX_CONTRACT_BYTES)}")
        contract = json.loads((directory / CONTRACT).read_text(encoding="utf-8"))
        if not isinstance(contract, dict):
            raise ValueError("it is not a JSON object")
    except (ValueError, UnicodeDecodeError, RecursionError) as err:
        raise bundle_fault(
            "bundle.corrupt",
            f"{directory / CONTRACT} cannot be read: {err}",
            expected="a JSON contract written by typedpipe",
            got=type(err).__name__,
            hint=RETRAIN,
            items=(str(directory / CONTRACT),),
        ) from None
    found = (contract.get("format"), contract.get("version"))
    version = found[1]
    readable = (
        isinstance(version, int)
        and not isinstance(version, bool)
        and OLDEST_READABLE <= version <= VERSION
    )
    if found[0] != FORMAT or not readable:
        raise bundle_fault(
            "bundle.version",
            f"{directory} holds a model bundle this typedpipe cannot read",
            expected=f"format {FORMAT!r} version {OLDEST_READABLE} to {VERSION}",
            got=f"format {found[0]!r} version {found[1]!r}",
            hint=f"use the typedpipe that wrote it, or {RETRAIN}",
        )
    faults = _checksum_faults(directory, contract)
    if faults:
        raise bundle_fault(
            "bundle.corrupt",
            f"{len(faults)} file(s) of the model bundle {directory} are not as exported",
            expected="every file as its SHA-256 in contract.json says",
            got=f"{len(faults)} file(s) changed or missing",
            hint=f"restore the bundle from a copy, or {RETRAIN}",
            items=tuple(faults),
        )
    return contract


def _checksum_faults(directory: Path, contract: dict[str, Any]) -> list[str]:
    """Each file the contract vouches for that is missing, outside the bundle or changed."""
    files = contract.get("files")
    if not isinstance(files, dict) or ARTIFACT not in files:
        # A contract that lists nothing, or not the artifact it is served by, vouches for nothing.
        files = {ARTIFACT: None}
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
    return faults


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


@dataclasses.dataclass(frozen=True)
class ContractFields:
    """What a bundle is rebuilt from, each field validated."""

    config: Config
    spec: ImageSpec
    class_names: tuple[str, ...]
    platforms: tuple[str, ...]


def contract_fields(contract: dict[str, Any], directory: Path) -> ContractFields:
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
        raise bundle_fault(
            "bundle.corrupt",
            f"{directory / CONTRACT} is not a contract typedpipe writes: {len(faults)} field(s) "
            "are malformed or out of range",
            expected="a contract written by typedpipe train",
            got=faults[0] if faults else "malformed",
            hint=RETRAIN,
            items=tuple(faults),
        )
    return ContractFields(config, spec, tuple(names), tuple(platforms))  # type: ignore[arg-type]
