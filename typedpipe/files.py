"""Files written whole or not at all, their checksums, and the failpoints that test it.

A killed process leaves either the previous version of a file or the new one:
the bytes go to a temporary file beside the target, are flushed to disk, and
the temporary file is renamed over the target (atomic on POSIX).
"""

import hashlib
import os
import signal
from pathlib import Path

# Failpoints: `TYPEDPIPE_FAILPOINT=<name>[:<n>]` kills the process (SIGKILL, as a
# power cut would) the n-th time (default: the first) the named point is reached.
# For the fault-injection tests; unset, a failpoint costs one dictionary lookup.
_FAILPOINT = "TYPEDPIPE_FAILPOINT"
_reached: dict[str, int] = {}


def failpoint(name: str) -> None:
    """Die here if the environment names this point (see above)."""
    wanted = os.environ.get(_FAILPOINT)
    if not wanted:
        return
    point, _, count = wanted.partition(":")
    if point != name:
        return
    _reached[name] = _reached.get(name, 0) + 1
    if _reached[name] >= int(count or 1):
        os.kill(os.getpid(), signal.SIGKILL)


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write `data` to `path` whole or not at all: a temporary file, fsync, then a rename."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    payload = data.encode() if isinstance(data, str) else data
    try:
        with open(temporary, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        failpoint(f"write-{path.name}")
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def checksums(folder: Path) -> dict[str, str]:
    """The SHA-256 of every file under `folder`, by path relative to it."""
    return {
        str(path.relative_to(folder)): sha256(path)
        for path in sorted(Path(folder).rglob("*"))
        if path.is_file()
    }
