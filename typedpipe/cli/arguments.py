"""Argument types and the config argument every config-taking command shares."""

import argparse
from pathlib import Path

from typedpipe.cli.exits import UsageError
from typedpipe.runtime import Cluster


def load(path: str | None, *, draft: bool = False):
    """The config at `path` (the built-in default when None), or a UsageError (exit 2)."""
    from typedpipe.pipeline.config import default_config_path, load_config, load_draft

    if path is not None and not path.strip():
        raise UsageError(
            "the config path is empty: name a .toml file, or leave it out for the default"
        )
    config_path = Path(path) if path is not None else default_config_path()
    if not config_path.is_file():
        raise UsageError(f"no such config file: {config_path}")
    return load_draft(config_path) if draft else load_config(config_path)


def address(text: str) -> str:
    """An argparse type: `HOST:PORT`."""
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT (e.g. 10.0.0.1:1234)")
    return text


def int_from(minimum: int):
    """An argparse type: an integer of at least `minimum`."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} must be at least {minimum}")
        return value

    return parse


positive_int = int_from(1)
non_negative_int = int_from(0)


def add_cluster(sub: argparse.ArgumentParser) -> None:
    """`--coordinator`, `--num-processes`, `--process-id`: one process of several."""
    sub.add_argument(
        "--coordinator",
        metavar="HOST:PORT",
        type=address,
        help="process 0's address (several processes)",
    )
    sub.add_argument("--num-processes", type=positive_int, help="processes in the run")
    sub.add_argument("--process-id", type=non_negative_int, help="this process's index")


def cluster(args) -> Cluster:
    """The cluster the flags name (all three together), or cluster detection (none).

    Raises:
        UsageError: some of the three flags without the others, or a process id too large.
    """
    flags = (args.coordinator, args.num_processes, args.process_id)
    if any(f is not None for f in flags) and not all(f is not None for f in flags):
        raise UsageError("--coordinator, --num-processes and --process-id go together")
    if args.process_id is not None and args.process_id >= args.num_processes:
        raise UsageError(f"--process-id {args.process_id} must be below --num-processes")
    return Cluster(*flags)
