"""Data parallelism with jax.sharding: batches split over a 1-D `data` mesh, state replicated."""

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from typedpipe.contracts import ConfigError, Diagnostic


class Placement:
    """Where arrays live: the batch axis sharded over `devices`, everything else replicated.

    Example:
        >>> placement = Placement(devices=1)
        >>> placement.put(np.zeros((8, 4))).shape
        (8, 4)
    """

    def __init__(self, devices: int | None = None):
        available = jax.devices()
        count = devices or len(available)
        if not 1 <= count <= len(available):
            raise ConfigError(
                Diagnostic(
                    "config.value",
                    f"--devices {count}: this machine has {len(available)} "
                    f"{available[0].platform} device(s)",
                    stage="devices",
                    expected=f"1..{len(available)}",
                    got=str(count),
                    hint=f"use --devices {len(available)} or fewer",
                )
            )
        self.mesh = Mesh(np.array(available[:count]), ("data",))
        self.batch_sharding = NamedSharding(self.mesh, PartitionSpec("data"))
        self.replicated = NamedSharding(self.mesh, PartitionSpec())

    @property
    def num_devices(self) -> int:
        return self.mesh.size

    def put(self, tree, *, process_local: bool = True):
        """A host batch onto the devices, its batch axis split over the mesh.

        With `process_local`, each process holds its own share of the global
        batch (as the loader shards it); otherwise every process holds all of it.
        """
        if not process_local:
            return jax.device_put(tree, self.batch_sharding)
        return jax.tree.map(
            lambda leaf: jax.make_array_from_process_local_data(self.batch_sharding, leaf), tree
        )

    def replicate(self, tree):
        return jax.device_put(tree, self.replicated)
