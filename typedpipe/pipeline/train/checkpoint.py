"""Orbax checkpoints of the whole train state, keyed by step, the newest two kept.

The state holds the step counter and the epoch's running sums, and the data
order follows from (seed, epoch): restoring the newest checkpoint resumes a run
exactly, wherever in an epoch it stopped. Each finished checkpoint gets a
manifest of its files' SHA-256 sums, checked before a restore, so flipped bytes
are reported instead of loaded.
"""

import json
from pathlib import Path

import jax

from typedpipe.contracts import ContractError, Diagnostic
from typedpipe.files import checksums, failpoint, write_atomic


class Checkpoints:
    """Save and restore the full train state (weights, optimizer, statistics, counters)."""

    def __init__(self, directory: Path):
        import orbax.checkpoint as ocp

        self._ocp = ocp
        self.directory = Path(directory).absolute()
        options = ocp.CheckpointManagerOptions(max_to_keep=2, create=True)
        self.manager = ocp.CheckpointManager(self.directory, options=options)
        self._open = True
        self.saved_step: int | None = None  # the newest step written, known once closed

    def save(self, step: int, state) -> None:
        """Write `state` as checkpoint `step`, and its manifest once it is complete."""
        if step in self.manager.all_steps():
            return
        self.manager.save(step, args=self._ocp.args.StandardSave(state))
        failpoint("checkpoint")
        self.manager.wait_until_finished()
        if jax.process_index() != 0:  # every process saves its part; the first one writes the rest
            return
        write_atomic(self._manifest(step), json.dumps(checksums(self._step_dir(step)), indent=1))
        kept = {self._manifest(s) for s in self.manager.all_steps()}
        for stale in self.directory.glob("*.sha256.json"):
            if stale not in kept:
                stale.unlink(missing_ok=True)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def restore(self, step: int, like):
        """Restore into the structure, dtypes and shardings of `like`.

        Raises:
            ContractError: `checkpoint.corrupt`, a file differs from its manifest.
        """
        self.verify(step)
        abstract = jax.tree.map(self._ocp.utils.to_shape_dtype_struct, like)
        return self.manager.restore(step, args=self._ocp.args.StandardRestore(abstract))

    def verify(self, step: int) -> None:
        """Hold checkpoint `step`'s files against its manifest (one without a manifest passes:
        it was written by an older typedpipe)."""
        manifest = self._manifest(step)
        if not manifest.exists():
            return
        expected = json.loads(manifest.read_text())
        found = checksums(self._step_dir(step))
        bad = sorted(name for name in expected if found.get(name) != expected[name])
        if bad:
            raise ContractError(
                Diagnostic(
                    "checkpoint.corrupt",
                    f"checkpoint {step} differs from the checksums written with it",
                    stage="checkpoint",
                    expected="the bytes that were saved",
                    got=f"{len(bad)} changed or missing file(s)",
                    hint=f"delete {self._step_dir(step)} to resume from the checkpoint before it, "
                    "or train again without --resume",
                    items=bad,
                )
            )

    def _step_dir(self, step: int) -> Path:
        return self.directory / str(step)

    def _manifest(self, step: int) -> Path:
        return self.directory / f"{step}.sha256.json"

    def __enter__(self) -> "Checkpoints":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Wait for writes in flight, then release the manager (again: nothing)."""
        if self._open:
            self.manager.wait_until_finished()
            self.saved_step = self.manager.latest_step()
            self.manager.close()
            self._open = False
