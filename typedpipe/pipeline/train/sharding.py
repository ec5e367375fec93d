"""Data parallelism with jax.sharding: batches split over a 1-D `data` mesh, state replicated.

Across several processes (hosts) the mesh spans every process's devices; each
process reads its own share of every batch and hands it to
`jax.make_array_from_process_local_data`.
"""

import os

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from typedpipe.contracts import ConfigError, ContractError, Diagnostic
from typedpipe.models import build_model
from typedpipe.models.summary import layer_rows
from typedpipe.pipeline.config import Config


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
        if jax.process_count() > 1 and count != len(available):
            # A mesh over some processes' devices only would leave the others idle.
            raise ConfigError(
                Diagnostic(
                    "config.value",
                    f"--devices {count}: {jax.process_count()} processes train on all "
                    f"{len(available)} devices together",
                    stage="devices",
                    expected=str(len(available)),
                    got=str(count),
                    hint="drop --devices when training on several processes",
                )
            )
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
        batch (as the loader shards it); otherwise every process holds all of it
        and hands each of its devices the rows that device owns.
        """
        if jax.process_count() == 1:  # one process holds every row: one transfer call
            return jax.device_put(tree, self.batch_sharding)
        if process_local:
            return jax.tree.map(
                lambda leaf: jax.make_array_from_process_local_data(self.batch_sharding, leaf), tree
            )
        return jax.tree.map(
            lambda leaf: jax.make_array_from_callback(
                leaf.shape, self.batch_sharding, lambda index: leaf[index]
            ),
            tree,
        )

    def replicate(self, tree):
        """A copy of `tree` on every device of the mesh (of every process)."""
        return jax.jit(lambda t: t, out_shardings=self.replicated)(tree)


def use_every_cpu_core() -> None:
    """Give JAX's CPU backend one device per core, so that data parallelism uses every core.

    XLA's CPU backend runs each fused loop on one thread; only its matmuls use
    more. A batch sharded over one device per core runs every op on every core.
    Call it before JAX starts a backend (the CLI does, first thing); it keeps a
    device count the user chose (XLA_FLAGS, JAX_NUM_CPU_DEVICES) and leaves a
    backend already running alone.
    """
    chosen = "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", "")
    if chosen or "JAX_NUM_CPU_DEVICES" in os.environ:
        return
    try:
        jax.config.update("jax_num_cpu_devices", len(os.sched_getaffinity(0)))
    except RuntimeError:  # a backend already runs (a library caller): its devices stay
        return


#: Below this many FLOPs per step and device, splitting a batch costs more than it gains.
#: On 2 cores: small_cnn on digits (0.3 GFLOP a device) gains nothing, the seed CNN
#: (0.7) 1.1x, resnet20 (7.9) 1.4x.
SHARD_FLOPS = 5e8


def default_devices(config: Config) -> int:
    """Devices to train `config` on when the user names none.

    Several processes: all of theirs. The CPU backend: as many of its devices
    (one per core, `use_every_cpu_core`) as divide the batch, when the step is
    big enough for each share to pay for the split. Accelerators: one.
    """
    devices = jax.devices()
    if jax.process_count() > 1:
        return len(devices)
    if devices[0].platform != "cpu" or len(devices) == 1:
        return 1
    m, batch_size = config.model, config.train.batch_size
    try:
        model = nnx.eval_shape(
            lambda: build_model(m.name, m.input, m.num_classes, m.layers, rngs=nnx.Rngs(0))
        )
    except (ConfigError, ContractError):  # `check` reports why; train on one device
        return 1
    # Forward and backward: about three forward passes.
    step_flops = 3 * batch_size * sum(row.flops for row in layer_rows(model))
    usable = [n for n in range(1, len(devices) + 1) if batch_size % n == 0]
    return max((n for n in usable if step_flops / n >= SHARD_FLOPS), default=1)


def join_cluster(
    coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None
) -> None:
    """Join the other processes of a run through `jax.distributed`, before any JAX work.

    With a coordinator, as the flags say; without, JAX's own cluster detection
    (SLURM, Open MPI, TPU pods, Kubernetes) decides, and where it finds no
    cluster this is one process on its own.
    """
    if coordinator is not None:
        # CPU devices of several processes talk through gloo (GPUs and TPUs use their own).
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(coordinator, num_processes, process_id)
        return
    try:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize()
    except ValueError:  # "coordinator_address should be defined": no cluster found
        return
    except RuntimeError:  # JAX already runs in this process (a library caller): on its own
        return
