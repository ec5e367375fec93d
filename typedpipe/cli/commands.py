"""The table of commands: one entry per `typedpipe` command, read by the parser, the
runtime settings, the failure path and the launcher.

A new command is one handler module and one `Command` here.
"""

import argparse
import dataclasses
from collections.abc import Callable
from typing import Literal

from typedpipe.cli import arguments
from typedpipe.cli.bench import cmd_bench
from typedpipe.cli.check import cmd_check, cmd_summary
from typedpipe.cli.doctor import cmd_doctor
from typedpipe.cli.init import cmd_init
from typedpipe.cli.model import cmd_eval, cmd_predict
from typedpipe.cli.train import cmd_train


def _no_arguments(sub: argparse.ArgumentParser) -> None:
    pass


@dataclasses.dataclass(frozen=True)
class Command:
    """One command and what it needs.

    Attributes:
        name, handler, help: `typedpipe NAME`, the function that runs it (args -> exit
            code), and its line in `--help`.
        config: whether it takes a CONFIG argument, and whether it may be left out.
        json: whether it has `--json`.
        arguments: adds the command's own arguments to its parser.
        steps: it runs compiled steps: huge pages and XLA's CPU convolutions
            (`typedpipe.runtime`).
        every_core: one CPU device per core, for `--devices N`.
        joins: it may be one process of several (`--coordinator`, cluster detection).
        findings: its findings (config faults included) go to stdout, not stderr.
        on_interrupt: what a Ctrl-C before its first step means, for the message.
    """

    name: str
    handler: Callable[[argparse.Namespace], int]
    help: str
    config: Literal["required", "optional", "none"] = "required"
    json: bool = True
    arguments: Callable[[argparse.ArgumentParser], None] = _no_arguments
    steps: bool = False
    every_core: bool = False
    joins: bool = False
    findings: bool = False
    on_interrupt: str = ""


def _train_arguments(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--out", help="run folder (default runs/<name>)")
    sub.add_argument("--epochs", type=arguments.positive_int)
    sub.add_argument("--max-steps", type=arguments.positive_int)
    sub.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    sub.add_argument("--devices", type=arguments.positive_int, help="data-parallel device count")
    arguments.add_cluster(sub)


def _run_dir(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("run_dir", help="a run folder written by typedpipe train")


def _eval_arguments(sub: argparse.ArgumentParser) -> None:
    _run_dir(sub)
    sub.add_argument(
        "--data",
        metavar="CONFIG",
        help="evaluate on every image of the source this config's [data] names",
    )


def _predict_arguments(sub: argparse.ArgumentParser) -> None:
    _run_dir(sub)
    sub.add_argument(
        "images",
        nargs="+",
        metavar="IMAGE_OR_FOLDER",
        help="image files, or folders (every image file under them, sorted)",
    )


def _bench_arguments(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--steps", type=arguments.positive_int, default=50)
    sub.add_argument("--devices", type=arguments.positive_int, help="data-parallel device count")


def _init_arguments(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("folder", help="a folder with one sub-folder of images per class")
    sub.add_argument("--out", metavar="CONFIG", help="the config to write (default <folder>.toml)")
    sub.add_argument(
        "--weights",
        metavar="FILE",
        help="fine-tune this pretrained file's network (a .safetensors file or a run's model/)",
    )


COMMANDS: dict[str, Command] = {
    command.name: command
    for command in (
        Command(
            "check",
            cmd_check,
            "validate the pipeline and its data before any step",
            findings=True,
        ),
        Command(
            "summary",
            cmd_summary,
            "shape flow, parameters and FLOPs of every stage and layer",
            findings=True,
        ),
        Command(
            "train",
            cmd_train,
            "check, then train (default: examples/digits.toml)",
            config="optional",
            arguments=_train_arguments,
            steps=True,
            every_core=True,
            joins=True,
            on_interrupt="before the first step: nothing was trained",
        ),
        Command(
            "eval",
            cmd_eval,
            "accuracy of a run's exported model on its test split, or other data",
            config="none",
            arguments=_eval_arguments,
            steps=True,
        ),
        Command(
            "predict",
            cmd_predict,
            "classify image files with a run's exported model",
            config="none",
            arguments=_predict_arguments,
            steps=True,
        ),
        Command(
            "bench",
            cmd_bench,
            "compile time, speed and memory of the train step",
            config="optional",
            arguments=_bench_arguments,
            steps=True,
            every_core=True,
        ),
        Command(
            "init",
            cmd_init,
            "survey an image folder and write a config that passes check",
            config="none",
            json=False,
            arguments=_init_arguments,
        ),
        Command("doctor", cmd_doctor, "what JAX sees on this machine", config="none"),
    )
}
