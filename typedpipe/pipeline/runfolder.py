"""The run folder: one run at a time, a re-train that loses nothing, and what a resume needs.

- A lock (`.lock`, `flock`ed for the life of the process): a second run on the
  same folder is refused with the first one's process id; a lock left by a dead
  process is free, since the kernel drops it with the process.
- A re-train over a finished run works in `.next/` beside it and replaces the
  old files only once it has finished; until then the old run is untouched.
- The fingerprint of what a checkpoint depends on (`fingerprint.json`), so that
  `--resume` with a different model, split, optimizer, precision or batch size
  is refused with the list of what changed.
"""

import dataclasses
import errno
import fcntl
import json
import os
import shutil
import socket
from pathlib import Path
from typing import Any

import numpy as np

from typedpipe.contracts import Diagnostic
from typedpipe.contracts.errors import ContractError
from typedpipe.files import write_atomic
from typedpipe.pipeline.config import Config

_NEXT = ".next"
_PREVIOUS = ".previous"
# What a finished run leaves in its folder (besides the lock).
RUN_FILES = (
    "config.toml",
    "fingerprint.json",
    "history.jsonl",
    "metrics.json",
    "checkpoints",
    "model",
    "report.png",
)


class RunFolderError(ContractError):
    """The run folder cannot be used: locked by another run, not writable, full."""


def io_error(path: Path, err: OSError, doing: str) -> RunFolderError:
    """An OSError while writing the run folder, as a diagnostic with the path and a fix."""
    if err.errno == errno.ENOSPC:
        hint = f"free space on the disk holding {path}, or pass --out on another disk"
    elif err.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        hint = f"make {path} writable, or pass --out with a folder you can write"
    else:
        hint = "pass --out with a folder you can write"
    return RunFolderError(
        Diagnostic(
            "io.write",
            f"cannot {doing} {path}: {err.strerror or err}",
            stage="run folder",
            expected="a writable folder with free space",
            got=f"{type(err).__name__} (errno {err.errno})",
            hint=hint,
            items=(str(path),),
        )
    )


class RunFolder:
    """The folder of one run, locked while this process uses it.

    Args:
        out: the run folder (`--out`, or `runs/<name>`).
        resume: continue the newest checkpoint (of an unfinished re-train, if one is there).

    Raises:
        RunFolderError: another run holds the folder, or it cannot be written.
    """

    def __init__(self, out: Path, *, resume: bool):
        self.out = Path(out)
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            self._lock = open(self.out / ".lock", "a+")  # noqa: SIM115 - held for the run's life
        except OSError as err:
            raise io_error(self.out, err, "create the run folder") from None
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.seek(0)
            holder = self._lock.read().strip() or "an unknown process"
            self._lock.close()
            raise RunFolderError(
                Diagnostic(
                    "run.locked",
                    f"{self.out} is in use by another run ({holder})",
                    stage="run folder",
                    expected="a run folder no other run is using",
                    got=holder,
                    hint="wait for that run to finish, or pass --out with another folder",
                )
            ) from None
        self._lock.seek(0)
        self._lock.truncate()
        self._lock.write(f"process {os.getpid()} on {socket.gethostname()}\n")
        self._lock.flush()
        unfinished = self.out / _NEXT
        finished = any((self.out / name).exists() for name in RUN_FILES)
        if resume:
            self.work = unfinished if _holds_checkpoint(unfinished) else self.out
        else:
            shutil.rmtree(unfinished, ignore_errors=True)
            self.work = unfinished if finished else self.out
        try:
            self.work.mkdir(exist_ok=True)
            # Half-written files of a killed run: the lock says no live run owns them.
            for leftover in self.work.rglob(".*.tmp"):
                leftover.unlink()
            probe = self.work / f".probe.{os.getpid()}"
            probe.write_bytes(b"x" * 4096)
            probe.unlink()
        except OSError as err:
            raise io_error(self.work, err, "write in") from None

    @property
    def staged(self) -> bool:
        """Whether this run writes beside a finished one (and replaces it when done)."""
        return self.work != self.out

    def require_space(self, needed: int) -> None:
        """Refuse to start a run whose checkpoints cannot fit on the disk.

        Raises:
            RunFolderError: `io.write`, with how much is needed and free.
        """
        free = shutil.disk_usage(self.work).free
        if free < needed:
            err = OSError(errno.ENOSPC, f"{needed:,} bytes needed for checkpoints, {free:,} free")
            raise io_error(self.work, err, "fit the checkpoints in")

    def publish(self) -> None:
        """Replace the finished run's files with this run's, now that it has finished too.

        The old files move to `.previous/` first, so at every moment one complete
        run is in the folder; `.previous/` is deleted last.
        """
        if not self.staged:
            return
        previous = self.out / _PREVIOUS
        shutil.rmtree(previous, ignore_errors=True)
        previous.mkdir()
        for name in RUN_FILES:
            if (self.out / name).exists():
                os.replace(self.out / name, previous / name)
        for name in RUN_FILES:
            if (self.work / name).exists():
                os.replace(self.work / name, self.out / name)
        shutil.rmtree(self.work, ignore_errors=True)
        shutil.rmtree(previous, ignore_errors=True)
        self.work = self.out

    def close(self) -> None:
        fcntl.flock(self._lock, fcntl.LOCK_UN)
        self._lock.close()


@dataclasses.dataclass
class FollowerFolder:
    """The run folder as a process other than the first sees it: it only reads there
    and saves its part of each checkpoint; the first process writes everything else."""

    out: Path
    work: Path
    staged: bool = False

    def require_space(self, needed: int) -> None:
        """Checked by the first process."""

    def publish(self) -> None:
        """Done by the first process."""

    def close(self) -> None:
        """Nothing is held."""


def open_run_folder(out: Path, *, resume: bool) -> "RunFolder | FollowerFolder":
    """The first process opens and locks the folder; the others follow its choice of
    where to work (the folder, or `.next/` beside a finished run).

    Raises:
        RunFolderError: the first process could not use the folder (each process raises).
    """
    import jax

    if jax.process_count() == 1:
        return RunFolder(out, resume=resume)
    from jax.experimental import multihost_utils

    folder, error, choice = None, None, 0
    if jax.process_index() == 0:
        try:
            folder = RunFolder(out, resume=resume)
            choice = 1 if folder.staged else 0
        except RunFolderError as err:
            error, choice = err, 2
    choice = int(multihost_utils.broadcast_one_to_all(np.int32(choice)))
    if error is not None:
        raise error
    if choice == 2:
        raise RunFolderError(
            Diagnostic(
                "io.write",
                f"process 0 could not open the run folder {out}",
                stage="run folder",
                expected="a run folder process 0 can lock and write",
                got="refused by process 0",
                hint="see process 0's output for the reason and its fix",
            )
        )
    if folder is not None:
        return folder
    return FollowerFolder(out, out / _NEXT if choice == 1 else out, staged=choice == 1)


def _holds_checkpoint(folder: Path) -> bool:
    """Whether `folder/checkpoints` holds a finished Orbax checkpoint (a step directory)."""
    checkpoints = folder / "checkpoints"
    return checkpoints.is_dir() and any(p.name.isdigit() for p in checkpoints.iterdir())


def fingerprint(config: Config, label_format: str, records: int) -> dict[str, Any]:
    """What a checkpoint's meaning depends on: change any of it and the weights, the
    optimizer state or the data split no longer fit the config."""
    data, train = config.data, config.train
    options = data.options
    return {
        "seed": config.seed,
        "data": {
            "source": data.source,
            "options": _fields(options),
            "labels": label_format,
            "records": records,
            "val_fraction": data.val_fraction,
            "test_fraction": data.test_fraction,
        },
        "preprocess": [{"op": s.op, **dataclasses.asdict(s)} for s in config.preprocess],
        "model": dataclasses.asdict(config.model),
        "optimizer": {
            "optimizer": train.optimizer,
            "learning_rate": train.learning_rate,
            "schedule": train.schedule,
            "weight_decay": train.weight_decay,
            "momentum": train.momentum,
            "clip_global_norm": train.clip_global_norm,
        },
        "precision": train.precision,
        "batch_size": train.batch_size,
        # The recipe's keys, only those set: a run from before they existed still resumes.
        **({"recipe": recipe} if (recipe := _recipe(train)) else {}),
    }


def _recipe(train: Any) -> dict[str, Any]:
    """The `[train]` recipe keys that differ from their defaults."""
    keys = ("label_smoothing", "mixup", "cutmix", "warmup_epochs", "ema_decay", "freeze_epochs")
    defaults = type(train)()
    found = {
        key: getattr(train, key) for key in keys if getattr(train, key) != getattr(defaults, key)
    }
    if train.freeze_epochs:
        found["backbone_lr_mult"] = train.backbone_lr_mult
    return found


def differences(old: Any, new: Any, where: str = "") -> list[str]:
    """`model.name: 'small_cnn' -> 'lenet'` for every leaf that differs."""
    if isinstance(old, dict) and isinstance(new, dict):
        found = []
        for key in sorted(set(old) | set(new)):
            path = f"{where}.{key}" if where else key
            found += differences(old.get(key), new.get(key), path)
        return found
    if _jsonable(old) != _jsonable(new):
        return [f"{where}: {_jsonable(old)!r} -> {_jsonable(new)!r}"]
    return []


def _fields(value: Any) -> dict[str, Any] | None:
    """A dataclass instance's fields (a source's options); None for anything else."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return None


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def check_resume(work: Path, current: dict[str, Any]) -> None:
    """Refuse to resume a checkpoint trained under a different fingerprint.

    Raises:
        RunFolderError: `resume.mismatch`, with every difference listed.
    """
    stored = work / "fingerprint.json"
    if not stored.exists():
        return
    changed = differences(json.loads(stored.read_text()), current)
    if changed:
        raise RunFolderError(
            Diagnostic(
                "resume.mismatch",
                f"the checkpoint in {work} was trained with a different config "
                f"({len(changed)} difference(s))",
                stage="resume",
                expected="the config the checkpoint was trained with",
                got="; ".join(changed[:3]) + (" ..." if len(changed) > 3 else ""),
                hint="restore those values in the config (its config.toml holds them all), "
                "or train without --resume (a new run replaces the old one when it finishes)",
                items=changed,
            )
        )


def write_fingerprint(work: Path, current: dict[str, Any]) -> None:
    write_atomic(work / "fingerprint.json", json.dumps(current, indent=2, default=str) + "\n")


def no_checkpoint(out: Path) -> RunFolderError:
    return RunFolderError(
        Diagnostic(
            "resume.missing",
            f"--resume: {out} holds no checkpoint",
            stage="resume",
            expected=f"{out}/checkpoints/<step>",
            got="no checkpoint",
            hint="drop --resume to start a new run, or pass --out with the run to continue",
        )
    )
