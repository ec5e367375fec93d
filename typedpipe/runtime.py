"""Everything a process sets before JAX starts a backend, in one documented order.

Each setting is read once, early, by something that cannot be told later:

0. **Huge pages** (`relaunch_on_huge_pages`), read by glibc when the process starts,
   so a command that runs steps re-executes itself once with the tunable set.
   XLA's CPU backend allocates a step's temporary buffers afresh on every call;
   glibc serves allocations that large with a new mapping each time, so the kernel
   faults in and zeroes every 4 KiB page on every step (20,000 faults a step for
   the seed CNN, 80,000 for resnet20). `glibc.malloc.hugetlb=1` asks for
   transparent huge pages instead (2 MiB, 512 times fewer faults). Measured on 2
   cores: the seed CNN's step 55 -> 38 ms, resnet20's 430 -> 370 ms. Nothing
   changes off Linux, under another C library, with huge pages off, or when
   GLIBC_TUNABLES already mentions `glibc.malloc.hugetlb` (the way to opt out:
   `GLIBC_TUNABLES=glibc.malloc.hugetlb=0`).
1. **XLA's CPU convolutions** (`use_xla_cpu_convolutions`): `XLA_FLAGS`, read when
   the backend starts.
2. **The CPU device count** (`use_every_cpu_core`): `jax_num_cpu_devices`, read when
   the backend starts.
3. **Joining a cluster** (`join_cluster`): `jax.distributed.initialize`, before any
   JAX computation.

Steps 1-3 are `prepare(Settings(...))`, which the CLI calls for every command
(the command table says which settings each needs) and the benchmarks call as the
CLI does. A new pre-JAX setting (a platform choice, a signal handler) is one
function here and one field of `Settings`, applied at its place in `prepare`.
This module imports nothing of typedpipe, so anything may import it.
"""

import contextlib
import dataclasses
import os
import signal
import sys
from collections.abc import Mapping
from pathlib import Path

HUGE_PAGES = "glibc.malloc.hugetlb=1"

_THP_MODE = Path("/sys/kernel/mm/transparent_hugepage/enabled")

# Set in the re-executed process's environment: SIGINT arrives blocked, to unblock.
_SIGINT_HELD = "_TYPEDPIPE_SIGINT_HELD"

#: XLA's CPU backend hands convolutions to YNNPACK by default. Its convolutions ran
#: resnet20's 3x3 layers up to 1.6x slower than XLA's own (Eigen), and their kernel
#: gradients 2 to 3x slower. The flag is experimental, so it is set only for the
#: jaxlib it was measured with: an unknown XLA flag aborts the process.
XLA_CPU_FLAG = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"
_FLAG_MEASURED_WITH = (0, 10)


@dataclasses.dataclass(frozen=True)
class Cluster:
    """How to meet a run's other processes: a coordinator and this process's place, or
    all None for `jax.distributed`'s own cluster detection (SLURM, TPU pods, Kubernetes)."""

    coordinator: str | None = None
    num_processes: int | None = None
    process_id: int | None = None


@dataclasses.dataclass(frozen=True)
class Settings:
    """What a command needs set before JAX starts.

    Attributes:
        steps: it runs compiled steps (XLA's own CPU convolutions).
        every_core: one CPU device per core, so `--devices N` can split a batch.
        cluster: join a run of several processes; None stays one process.
    """

    steps: bool = False
    every_core: bool = False
    cluster: Cluster | None = None


def prepare(settings: Settings) -> None:
    """Apply `settings` in the order above (steps 1 to 3), before any JAX work.

    Safe to call where a backend already runs (a library caller, a test): each
    setting the running backend can no longer take is left as it is.
    """
    if settings.steps:
        use_xla_cpu_convolutions()
    if settings.every_core:
        use_every_cpu_core()
    if settings.cluster is not None:
        join_cluster(settings.cluster)


def huge_page_environment(environ: Mapping[str, str] = os.environ) -> dict[str, str] | None:
    """`environ` with glibc's malloc on transparent huge pages, or None where that is
    already settled or cannot help."""
    tunables = environ.get("GLIBC_TUNABLES", "")
    if "glibc.malloc.hugetlb" in tunables or not _glibc_has_hugetlb() or not _thp_available():
        return None
    return {**environ, "GLIBC_TUNABLES": ":".join(filter(None, (tunables, HUGE_PAGES)))}


def relaunch_on_huge_pages() -> None:
    """Re-execute this process on huge pages where that helps (step 0); else return.

    A Ctrl-C pressed while the process re-executes is held, not lost: SIGINT is
    blocked across the exec and `release_held_interrupt` delivers it in the new one.
    """
    environ = huge_page_environment()
    if environ is None:
        return
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    # Where it cannot re-execute (a frozen or odd interpreter), it runs as it is.
    with contextlib.suppress(OSError):
        os.execve(sys.executable, sys.orig_argv, {**environ, _SIGINT_HELD: "1"})
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def release_held_interrupt() -> None:
    """In a re-executed process: deliver the Ctrl-C held during the re-execution, if any."""
    if os.environ.pop(_SIGINT_HELD, None):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def _glibc_has_hugetlb() -> bool:
    """glibc 2.35 or later (the tunable's first release), on Linux."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        name, version = (os.confstr("CS_GNU_LIBC_VERSION") or "").split()  # "glibc 2.36"
        major, minor = (int(part) for part in version.split(".")[:2])
    except (ValueError, OSError, AttributeError):  # not glibc, or an odd version string
        return False
    return name == "glibc" and (major, minor) >= (2, 35)


def _thp_available() -> bool:
    """Transparent huge pages on for `always` or `madvise` (the bracketed mode)."""
    try:
        return "[never]" not in _THP_MODE.read_text()
    except OSError:
        return False


def use_xla_cpu_convolutions() -> None:
    """Have XLA's CPU backend compute convolutions itself (`XLA_CPU_FLAG`): step 1.

    An `XLA_FLAGS` that already sets YNNPACK's fusions is kept.
    """
    import jax

    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_cpu_experimental_ynn_fusion_type" in flags:
        return
    if jax.__version_info__[:2] != _FLAG_MEASURED_WITH:  # jaxlib's version is jax's
        return
    os.environ["XLA_FLAGS"] = f"{flags} {XLA_CPU_FLAG}".strip()


def use_every_cpu_core() -> None:
    """Give JAX's CPU backend one device per core (step 2), so that `--devices N` can
    split a batch over the cores.

    A device count the user chose (XLA_FLAGS, JAX_NUM_CPU_DEVICES) is kept, and a
    backend already running is left alone.
    """
    import jax

    chosen = "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", "")
    if chosen or "JAX_NUM_CPU_DEVICES" in os.environ:
        return
    try:
        jax.config.update("jax_num_cpu_devices", len(os.sched_getaffinity(0)))
    except RuntimeError:  # a backend already runs (a library caller): its devices stay
        return


def join_cluster(cluster: Cluster = Cluster()) -> None:
    """Join the other processes of a run through `jax.distributed` (step 3).

    With a coordinator, as it says; without, JAX's own cluster detection decides,
    and where it finds no cluster this is one process on its own.
    """
    import jax

    # CPU devices of several processes talk through gloo (GPUs and TPUs use their own).
    if cluster.coordinator is not None:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(cluster.coordinator, cluster.num_processes, cluster.process_id)
        return
    try:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize()
    except ValueError:  # "coordinator_address should be defined": no cluster found
        return
    except RuntimeError:  # JAX already runs in this process (a library caller): on its own
        return
