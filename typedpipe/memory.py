"""Memory: what the host and a device have, the share a program may take of it, and the
diagnostics that refuse what would not fit, before anything is allocated.

- `available_bytes()` is the one definition of host memory, and `device_memory()` the
  one query of a device's (host RAM for a CPU device).
- Data a source holds in host memory may take `HOST_SHARE` of the host's memory
  (`budget()`); past it, `over_budget` is `memory.host`. A hostile or mistaken file is
  refused, never the cause of an out-of-memory kill.
- A compiled program may take `HEADROOM` of a device's memory; past it, `exceeds` is
  `memory.exceeds`.
- `size_text` writes every byte count a message shows.

JAX is imported by the device query alone, so that sources can import this module.
"""

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Literal

from typedpipe.contracts import Diagnostic

if TYPE_CHECKING:
    import jax

#: The share of the host's available memory that data held by a source may take:
#: the rest is for the train step, the runtime and the other processes.
HOST_SHARE = 0.5

#: The share of a device's memory a compiled program may take: the rest is left to
#: the runtime, the input pipeline and fragmentation.
HEADROOM = 0.9

Unit = Literal["TiB", "GiB", "MiB", "KiB"]

# The units `size_text` writes, largest first.
_UNITS = (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10))


def available_bytes() -> int:
    """Memory the host can give without swapping: `MemAvailable` where Linux says it,
    else the physical memory.

    `MemAvailable` rather than the physical total or `MemFree`: the total counts what
    other processes and the kernel already hold, so a program that "fits" it can
    still be killed for memory; `MemFree` leaves out the page cache the kernel hands
    back on demand, near zero on a host that has just read a data set. `MemAvailable`
    is the kernel's own estimate of what a new program can take.
    """
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def device_memory(device: "jax.Device | None" = None, *, free: bool = False) -> tuple[int, str]:
    """Bytes one device can hold, and what they are: accelerator memory, else host RAM.

    Args:
        device: the device asked about; by default this process's first (memory
            statistics are only known for a process's own devices).
        free: the bytes not yet in use, instead of the device's limit.

    Returns:
        `(bytes, where)`, `where` naming the memory for a message ("H100 memory",
        "host RAM"). A CPU device, or one that keeps no statistics, has the host's
        `available_bytes()`.
    """
    import jax

    device = device if device is not None else jax.local_devices()[0]
    stats = (device.memory_stats() if device.platform != "cpu" else None) or {}
    if "bytes_limit" not in stats:
        return available_bytes(), "host RAM"
    limit = int(stats["bytes_limit"])
    if free:
        limit -= int(stats.get("bytes_in_use", 0))
    return limit, f"{device.device_kind} memory"


def budget() -> int:
    """Bytes of data a source may hold in host memory."""
    return int(available_bytes() * HOST_SHARE)


def size_text(size: float, unit: Unit | None = None) -> str:
    """`1.30 GiB`, `512.00 MiB`, `12 KiB`: a byte count as a person reads it.

    Args:
        size: the bytes.
        unit: one unit for every size of a message; by default the largest unit
            the size reaches.

    Example:
        >>> size_text(1.5 * 2**30), size_text(2**29, "GiB"), size_text(300)
        ('1.50 GiB', '0.50 GiB', '0 KiB')
    """
    if unit is not None:
        return f"{size / dict(_UNITS)[unit]:.2f} {unit}"
    for name, scale in _UNITS[:-1]:
        if size >= scale:
            return f"{size / scale:.2f} {name}"
    return f"{size / 2**10:.0f} KiB"


def over_budget(
    what: str, need: int, hint: str, *, stage: str = "data", items: Iterable[str] = ()
) -> Diagnostic:
    """`memory.host`: `what` would need `need` bytes of host memory, more than the budget.

    Example:
        >>> over_budget("the images", 2**50, "num_samples = 1024").code
        'memory.host'
    """
    limit = budget()
    return Diagnostic(
        "memory.host",
        f"{what} would need {size_text(need)} of host memory; refused before allocating",
        stage=stage,
        expected=f"at most {size_text(limit)} ({HOST_SHARE:.0%} of the available memory)",
        got=size_text(need),
        hint=hint,
        items=tuple(items),
    )


def exceeds(
    program: str,
    need: float,
    limit: float,
    where: str,
    *,
    batch: str,
    stage: str,
    hint: str,
    setting: str = "",
    unit: Unit | None = None,
    share: bool = False,
) -> Diagnostic:
    """`memory.exceeds`: `program` needs `need` bytes for `batch`, more than `HEADROOM` of
    the device's memory.

    Args:
        program: what was compiled ("the compiled train step").
        need: the bytes it needs.
        limit, where: the device's memory, as `device_memory()` gives them.
        batch: for what it needs them ("per device for batch 1024").
        stage, hint: the diagnostic's.
        setting: the config setting that asks for it ("batch_size = 1024"), said in `got`.
        unit: one unit for every size (see `size_text`).
        share: say in `expected` what share of the device's memory the limit is.

    Example:
        >>> exceeds("the model", 3 * 2**30, 2 * 2**30, "host RAM", batch="for a batch of 8",
        ...         stage="model bundle", hint="pass fewer images at once").message
        'the model needs 3.00 GiB for a batch of 8; host RAM is 2.00 GiB'
    """

    def size(count: float) -> str:
        return size_text(count, unit)

    return Diagnostic(
        "memory.exceeds",
        f"{program} needs {size(need)} {batch}; {where} is {size(limit)}",
        stage=stage,
        expected=f"at most {size(limit * HEADROOM)}"
        + (f" ({HEADROOM:.0%} of {where})" if share else ""),
        got=size(need) + (f" for {setting}" if setting else ""),
        hint=hint,
    )
