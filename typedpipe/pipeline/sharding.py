"""Data parallelism with jax.sharding: batches split over a 1-D `data` mesh, state replicated."""

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from typedpipe.contracts import ConfigError, Diagnostic


class Placement:
    """Where arrays live: the batch axis sharded over `devices`, everything else replicated.

    Example:
        >>> placement = Placement(devices=1)
        >>> placement.batch(np.zeros((8, 4))).shape
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

    def batch(self, array: np.ndarray) -> jax.Array:
        return jax.device_put(array, self.batch_sharding)

    def replicate(self, tree):
        return jax.device_put(tree, self.replicated)
