"""Orbax checkpoints of the training state, one per epoch, the newest two kept."""

from pathlib import Path

import jax
import orbax.checkpoint as ocp


class Checkpoints:
    """Save and restore the full train state (weights, optimizer, statistics, counters)."""

    def __init__(self, directory: Path):
        options = ocp.CheckpointManagerOptions(max_to_keep=2, create=True)
        self.manager = ocp.CheckpointManager(Path(directory).absolute(), options=options)

    def save(self, epoch: int, state) -> None:
        self.manager.save(epoch, args=ocp.args.StandardSave(state))

    def latest_epoch(self) -> int | None:
        return self.manager.latest_step()

    def restore(self, epoch: int, like):
        """Restore into the structure, dtypes and shardings of `like`."""
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
        return self.manager.restore(epoch, args=ocp.args.StandardRestore(abstract))

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
