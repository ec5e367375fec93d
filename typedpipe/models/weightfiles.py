"""The files weights come from: a safetensors header and its tensors, or a bundle's Orbax weights.

Only the header is read until the model's needs are known: `read_index` gives
names, shapes and dtypes (safetensors validates the header against the file: a
shape whose bytes the file does not hold, or whose size overflows, is refused),
and `read_tensors` reads just the tensors asked for. A pickle is never opened.
"""

import json
from pathlib import Path

import numpy as np

from typedpipe.contracts import ContractError, Diagnostic

Shape = tuple[int, ...]
Index = dict[str, tuple[Shape, str]]

STAGE = "[model] weights"

#: File suffixes that are pickles: refused unopened (unpickling runs the file's code).
PICKLES = (".pth", ".pt", ".bin", ".ckpt", ".pkl", ".pickle", ".tar")

#: The one-line conversion of a PyTorch pickle to safetensors.
CONVERT = (
    'python -c "import torch, safetensors.torch as s; '
    "s.save_file(torch.load('{src}', map_location='cpu', weights_only=True), '{dst}')\""
)

#: A bundle is a folder with these (see `typedpipe.pipeline.export`, not imported here:
#: models sit below the pipeline).
BUNDLE_CONTRACT, BUNDLE_WEIGHTS, BUNDLE_FORMAT = "contract.json", "weights", "typedpipe.model"
_MAX_CONTRACT_BYTES = 16 * 2**20

# The first bytes of what `torch.save` writes: a zip archive, or a bare pickle.
_PICKLE_MAGIC = (b"PK\x03\x04", b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")


def _fault(code: str, message: str, *, expected: str, got: str, hint: str) -> ContractError:
    return ContractError(
        Diagnostic(code, message, stage=STAGE, expected=expected, got=got, hint=hint)
    )


def _conversion(path: Path) -> str:
    return CONVERT.format(src=path, dst=path.with_suffix(".safetensors"))


def is_bundle(path: Path) -> bool:
    return path.is_dir()


def read_index(path: str | Path) -> Index:
    """The tensors a weights file or bundle holds: name -> (shape, dtype code), no data read.

    Raises:
        ContractError: `weights.missing` (no such file or folder), `weights.format`
            (a pickle or another format: refused unopened), `weights.corrupt` (not a
            readable safetensors file or bundle).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in PICKLES:
        raise _fault(
            "weights.format",
            f"{path} is a pickle ({suffix}): typedpipe never unpickles a file, which could "
            "run any code",
            expected="a .safetensors file",
            got=f"a {suffix} file",
            hint=f"convert it once: {_conversion(path)}; then "
            f'weights = "{path.with_suffix(".safetensors")}" under [model]',
        )
    if not path.exists():
        raise _fault(
            "weights.missing",
            f"no weights file or bundle at {path}",
            expected="a .safetensors file, or a run's model/ folder",
            got=f'weights = "{path}"',
            hint='weights = "FILE.safetensors" (or "runs/<name>/model") under [model], a path '
            "relative to where typedpipe runs; or remove the line to start from random weights",
        )
    if is_bundle(path):
        return _bundle_index(path)
    if suffix != ".safetensors":
        raise _fault(
            "weights.format",
            f"{path} is not a safetensors file",
            expected="a .safetensors file, or a run's model/ folder",
            got=f"a {suffix or 'suffix-less'} file",
            hint=f"save the state dict with safetensors (safetensors.torch.save_file) and set "
            f'weights = "{path.with_suffix(".safetensors")}" under [model]',
        )
    return _safetensors_index(path)


def _safetensors_index(path: Path) -> Index:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="numpy") as handle:
            index = {}
            for name in handle.keys():  # noqa: SIM118 (a handle, not a dict)
                piece = handle.get_slice(name)
                index[name] = (tuple(piece.get_shape()), piece.get_dtype())
            return index
    except (SafetensorError, OSError, ValueError) as err:
        with open(path, "rb") as handle:
            head = handle.read(8)
        pickled = head.startswith(_PICKLE_MAGIC)
        raise _fault(
            "weights.corrupt",
            f"{path} cannot be read as safetensors: {_first_line(err)}",
            expected="a safetensors header (8-byte length, JSON) and the data it describes",
            got="a PyTorch pickle named .safetensors" if pickled else "unreadable bytes",
            hint=f"convert it: {_conversion(path)}"
            if pickled
            else "save the file again with safetensors.torch.save_file(model.state_dict(), PATH)",
        ) from None


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


def read_tensors(path: str | Path, names: list[str]) -> dict[str, np.ndarray]:
    """The tensors `names` of a file or bundle, as NumPy arrays in the file's dtype."""
    path = Path(path)
    if is_bundle(path):
        return _bundle_tensors(path, names)
    import ml_dtypes  # noqa: F401 (NumPy learns bfloat16's name, which safetensors asks for)
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as handle:
        return {name: handle.get_tensor(name) for name in names}


def _bundle_fault(path: Path, why: str) -> ContractError:
    return _fault(
        "weights.corrupt",
        f"{path} is not a model bundle typedpipe can start from: {why}",
        expected=f"a run's model/ folder ({BUNDLE_CONTRACT} and {BUNDLE_WEIGHTS}/)",
        got=why,
        hint='weights = "runs/<name>/model" under [model], the folder a finished run exported',
    )


def _bundle_weights(path: Path) -> Path:
    contract = path / BUNDLE_CONTRACT
    if not contract.is_file() or not (path / BUNDLE_WEIGHTS).is_dir():
        raise _bundle_fault(path, f"no {BUNDLE_CONTRACT} or {BUNDLE_WEIGHTS}/ in it")
    try:
        if contract.stat().st_size > _MAX_CONTRACT_BYTES:
            raise ValueError(f"{BUNDLE_CONTRACT} is too large")
        fields = json.loads(contract.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError, RecursionError) as err:
        raise _bundle_fault(path, f"{BUNDLE_CONTRACT} cannot be read ({err})") from None
    if not isinstance(fields, dict) or fields.get("format") != BUNDLE_FORMAT:
        raise _bundle_fault(path, f"{BUNDLE_CONTRACT} is not a typedpipe model contract")
    return (path / BUNDLE_WEIGHTS).absolute()


def _bundle_metadata(path: Path):
    import orbax.checkpoint as ocp

    weights = _bundle_weights(path)
    try:
        with ocp.StandardCheckpointer() as checkpointer:
            return weights, checkpointer.metadata(weights).item_metadata
    except Exception as err:  # Orbax raises many kinds on a damaged checkpoint
        raise _bundle_fault(path, f"its weights cannot be read ({type(err).__name__})") from None


def _leaf_name(keys) -> str:
    """`params/layers/0/conv/kernel/value` -> `layers.0.conv.kernel`: the Variable's path."""
    parts = [str(getattr(k, "key", getattr(k, "name", k))) for k in keys]
    return ".".join(parts[1:-1] if parts[-1] == "value" else parts[1:])


def _bundle_index(path: Path) -> Index:
    import jax

    from typedpipe.models.weights import dtype_code

    _, metadata = _bundle_metadata(path)
    leaves = jax.tree_util.tree_flatten_with_path(metadata)[0]
    return {
        _leaf_name(keys): (tuple(leaf.shape), dtype_code(leaf.dtype))
        for keys, leaf in leaves
        if hasattr(leaf, "shape")
    }


def _bundle_tensors(path: Path, names: list[str]) -> dict[str, np.ndarray]:
    import jax
    import orbax.checkpoint as ocp
    from jax.sharding import SingleDeviceSharding

    weights, metadata = _bundle_metadata(path)
    here = SingleDeviceSharding(jax.devices()[0])
    target = jax.tree.map(
        lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=here), metadata
    )
    try:
        with ocp.StandardCheckpointer() as checkpointer:
            restored = checkpointer.restore(weights, target)
    except Exception as err:  # a checkpoint whose data differs from its metadata
        raise _bundle_fault(
            path, f"its weights cannot be restored ({type(err).__name__})"
        ) from None
    wanted = set(names)
    return {
        name: np.asarray(leaf)
        for keys, leaf in jax.tree_util.tree_flatten_with_path(restored)[0]
        if (name := _leaf_name(keys)) in wanted
    }
