"""`typedpipe bench`: compile time, speed and memory of the train step."""

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from typedpipe.cli.arguments import load
from typedpipe.cli.exits import EXIT_OK
from typedpipe.cli.render import print_json
from typedpipe.cli.train import warn_of_devices


def cmd_bench(args) -> int:
    from typedpipe.pipeline.bench import bench_step

    config = load(args.config)
    warn_of_devices(args.devices)
    result = bench_step(config, steps=args.steps, devices=args.devices)
    if args.json:
        print_json(args, {"ok": True, **result})
        return EXIT_OK
    table = Table(title=f"train step: {result['model']} on {result['device_kind']}")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for key, value in result.items():
        table.add_row(key, escape(str(value)))
    Console().print(table)
    return EXIT_OK
