"""Host memory: how much data a source may hold, checked before anything is allocated.

A source that reads its data into memory (an `.npz`, the synthetic images, a
batch of decoded files) states what it would need *before* it allocates, from
sizes it can read cheaply (a zip directory, an `.npy` header, the config), and
refuses with `memory.host` when that is more than `HOST_SHARE` of the memory
the host has available: a hostile or mistaken file is refused, never the cause
of an out-of-memory kill.
"""

import os

from typedpipe.contracts import Diagnostic

#: The share of the host's available memory that data held by a source may take:
#: the rest is for the train step, the runtime and the other processes.
HOST_SHARE = 0.5


def available_bytes() -> int:
    """Memory the host can give without swapping: `MemAvailable` where Linux says it,
    else the physical memory."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def budget() -> int:
    """Bytes of data a source may hold in host memory."""
    return int(available_bytes() * HOST_SHARE)


def size_text(size: float) -> str:
    """`1.30 GiB`, `512.0 MiB`, `12 KiB`: a byte count as a person reads it."""
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20)):
        if size >= scale:
            return f"{size / scale:.2f} {unit}"
    return f"{size / 2**10:.0f} KiB"


def over_budget(what: str, need: int, hint: str, *, stage: str = "data", items=()) -> Diagnostic:
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
