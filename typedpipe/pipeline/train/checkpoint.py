"""Orbax checkpoints of the whole train state, keyed by step, the newest two kept.

The state holds the step counter and the epoch's running sums, and the data
order follows from (seed, epoch): restoring the newest checkpoint resumes a run
exactly, wherever in an epoch it stopped.
"""

from pathlib import Path

import jax


class Checkpoints:
    """Save and restore the full train state (weights, optimizer, statistics, counters)."""

    def __init__(self, directory: Path):
        import orbax.checkpoint as ocp

        self._ocp = ocp
        options = ocp.CheckpointManagerOptions(max_to_keep=2, create=True)
        self.manager = ocp.CheckpointManager(Path(directory).absolute(), options=options)

    def save(self, step: int, state) -> None:
        """Write `state` as checkpoint `step` (once: a step already saved is kept as it is)."""
        if step not in self.manager.all_steps():
            self.manager.save(step, args=self._ocp.args.StandardSave(state))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def restore(self, step: int, like):
        """Restore into the structure, dtypes and shardings of `like`."""
        abstract = jax.tree.map(self._ocp.utils.to_shape_dtype_struct, like)
        return self.manager.restore(step, args=self._ocp.args.StandardRestore(abstract))

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
