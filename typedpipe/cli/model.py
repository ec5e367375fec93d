"""`typedpipe eval` and `typedpipe predict`: a run's exported model on data and files."""

from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from typedpipe.cli.arguments import load
from typedpipe.cli.exits import EXIT_INVALID, EXIT_OK, UsageError
from typedpipe.cli.progress import showing_progress
from typedpipe.cli.render import print_json, render_diagnostics, shown, stderr
from typedpipe.contracts.diagnostics import visible


def bundle(run_dir: str):
    """The run folder's exported model, or a UsageError when it has none."""
    from typedpipe.pipeline.export import ExportedModel

    folder = Path(run_dir) / "model"
    if not (folder / "contract.json").is_file():
        raise UsageError(
            f"{run_dir} has no exported model ({folder}/contract.json): pass a "
            "run folder written by typedpipe train"
        )
    return ExportedModel(folder)  # a bundle of another version or a changed file: exit 1


def cmd_eval(args) -> int:
    from typedpipe.pipeline.export import source_data, test_split

    model = bundle(args.run_dir)
    with showing_progress(args, "evaluating"):
        data = source_data(model, load(args.data)) if args.data else test_split(model)
        result = model.evaluate(data.images, data.class_ids)
    if args.json:
        print_json(args, {"ok": True, "data": args.data, "split": data.split, **result})
    else:
        where = f" on {args.data}" if args.data else ""
        Console().print(
            f"{escape(args.run_dir)}{escape(where)}: {data.split} accuracy "
            f"{result['accuracy']:.4f}, loss {result['loss']:.4f} on {result['images']} images"
            if result["images"]
            else f"{escape(args.run_dir)}: no images to evaluate"
        )
    return EXIT_OK


def cmd_predict(args) -> int:
    missing = [p for p in args.images if not Path(p).exists()]
    if missing:
        raise UsageError(f"no such image file or folder: {', '.join(missing)}")
    model = bundle(args.run_dir)
    with showing_progress(args, "predicting"):
        predictions, faults = model.predict_files(args.images)
    ok = not faults
    if args.json:
        print_json(
            args,
            {
                "ok": ok,
                "predictions": [p.to_json() for p in predictions],
                "diagnostics": [d.to_json() for d in faults],
            },
        )
        return EXIT_OK if ok else EXIT_INVALID
    if predictions:
        table = Table(title=f"predictions of {shown(args.run_dir, newlines=False)}")
        for column in ("file", "class", "probability", "runners-up"):
            table.add_column(column)
        for p in predictions:
            others = ", ".join(
                f"{visible(name)} {probability:.3f}" for _, name, probability in p.top[1:]
            )
            table.add_row(
                shown(p.file, newlines=False),
                shown(p.name, newlines=False),
                f"{p.probability:.3f}",
                escape(others),
            )
        Console().print(table)
    if faults:
        render_diagnostics(faults, stderr)
    return EXIT_OK if ok else EXIT_INVALID
