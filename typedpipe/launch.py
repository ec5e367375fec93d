"""The `typedpipe` command: the process settings that have to exist before Python starts,
then the CLI.

XLA's CPU backend allocates a step's temporary buffers afresh on every call. glibc
serves allocations that large with a new mapping each time, so the kernel faults in
and zeroes every 4 KiB page of it on every step: 20,000 faults a step for the seed CNN,
80,000 for resnet20. glibc's `glibc.malloc.hugetlb=1` tunable asks for transparent
huge pages instead (2 MiB, 512 times fewer faults). Measured on 2 cores: the seed
CNN's step 55 -> 38 ms, resnet20's 430 -> 370 ms.

A tunable is read only when a process starts, so the commands that run steps
re-execute themselves once with it set. Nothing changes where it cannot help:
off Linux, under another C library, with huge pages turned off, or when
GLIBC_TUNABLES already says anything about `glibc.malloc.hugetlb` (which is also
how to opt out: `GLIBC_TUNABLES=glibc.malloc.hugetlb=0`).
"""

import contextlib
import os
import signal
import sys
from collections.abc import Mapping
from pathlib import Path

HUGE_PAGES = "glibc.malloc.hugetlb=1"

#: The commands that run compiled steps; the others start as they are.
STEPPING = frozenset({"train", "bench", "eval", "predict"})

_THP_MODE = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def huge_page_environment(environ: Mapping[str, str] = os.environ) -> dict[str, str] | None:
    """`environ` with glibc's malloc on transparent huge pages, or None where that is
    already settled or cannot help."""
    tunables = environ.get("GLIBC_TUNABLES", "")
    if "glibc.malloc.hugetlb" in tunables or not _glibc_has_hugetlb() or not _thp_available():
        return None
    return {**environ, "GLIBC_TUNABLES": ":".join(filter(None, (tunables, HUGE_PAGES)))}


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


#: The exit status of a run stopped by Ctrl-C (DESIGN.md), as `typedpipe.cli` has it.
EXIT_INTERRUPTED = 130

# Set in the re-executed process's environment: SIGINT arrives blocked, to unblock.
_SIGINT_HELD = "_TYPEDPIPE_SIGINT_HELD"


def main() -> int:
    """The console script: re-execute a stepping command on huge pages once, then run it."""
    if os.environ.pop(_SIGINT_HELD, None):
        # A Ctrl-C pressed during the re-execution was held, pending: it lands here.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    try:
        command = next((arg for arg in sys.argv[1:] if not arg.startswith("-")), None)
        environ = huge_page_environment() if command in STEPPING else None
        if environ is not None:
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
            # Where it cannot re-execute (a frozen or odd interpreter), it runs as it is.
            with contextlib.suppress(OSError):
                os.execve(sys.executable, sys.orig_argv, {**environ, _SIGINT_HELD: "1"})
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        from typedpipe.cli import main as cli_main

        code = cli_main()
    except KeyboardInterrupt:  # before the CLI started: while Python imported it
        print("interrupted: nothing was trained or written", file=sys.stderr)
        code = EXIT_INTERRUPTED
    if code == EXIT_INTERRUPTED:
        # XLA may still be compiling on its own threads, and tearing the interpreter
        # down under them crashes it. Everything typedpipe writes is closed by now.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
