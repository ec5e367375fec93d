"""Training and inference speed against the peers: typedpipe, hand-written Flax NNX, PyTorch eager.

Every (framework, workload) pair runs in a fresh interpreter, one at a time,
and the rounds interleave the frameworks, each round in a rotated order, so that
machine noise and warm caches hit them alike; the median round is reported.
typedpipe is measured with the step `typedpipe bench` times (the one `fit`
runs), contracts checked and, to price them, unchecked.

    python -m benchmarks.training            # all workloads, 3 rounds
    python -m benchmarks.training --one typedpipe seed_cnn
"""

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
from pathlib import Path

from typedpipe.runtime import Settings, huge_page_environment, prepare

ROOT = Path(__file__).parent.parent

# name: (typedpipe config, input shape, batch size, timed steps)
WORKLOADS = {
    "seed_cnn": ("benchmarks/configs/seed_cnn.toml", (64, 64, 3), 64, 30),
    "small_cnn": ("examples/digits.toml", (8, 8, 1), 64, 100),
    "resnet20": ("benchmarks/configs/resnet20.toml", (32, 32, 3), 128, 10),
}
FRAMEWORKS = ("typedpipe", "typedpipe_unchecked", "flax_nnx", "torch_eager")


def _measure_typedpipe(workload: str, checked: bool) -> dict:
    from typedpipe import load_config
    from typedpipe.contracts import unchecked
    from typedpipe.pipeline.bench import bench_step

    prepare(Settings(steps=True, every_core=True))  # as `typedpipe bench` does
    path, _, _, steps = WORKLOADS[workload]
    config = load_config(ROOT / path)
    if checked:
        result = bench_step(config, steps=steps)
    else:
        with unchecked():
            result = bench_step(config, steps=steps)
    return {
        "train": result["images_per_second"],
        "inference": result["inference_images_per_second"],
        "flops_per_second": result["flops_per_second"],
        "compile_seconds": result["compile_seconds"],
    }


def _measure_peer(framework: str, workload: str) -> dict:
    peer = importlib.import_module(f"benchmarks.peers.{framework}")
    _, shape, batch_size, steps = WORKLOADS[workload]
    return {
        "train": peer.train_images_per_second(workload, shape, batch_size, steps),
        "inference": peer.inference_images_per_second(workload, shape, batch_size, steps),
    }


def measure(framework: str, workload: str) -> dict:
    """One measurement, in this process."""
    if framework.startswith("typedpipe"):
        return _measure_typedpipe(workload, checked=framework == "typedpipe")
    return _measure_peer(framework, workload)


def in_fresh_process(module: str, framework: str, *arguments: str) -> dict:
    """`python -m MODULE --one FRAMEWORK ARGUMENTS` in a fresh interpreter: the JSON on
    its last line. typedpipe runs in the process its command would run in
    (`typedpipe.runtime`); the peers in the one their users get."""
    environ = huge_page_environment() if framework.startswith("typedpipe") else None
    done = subprocess.run(
        [sys.executable, "-m", module, "--one", framework, *arguments],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        what = " ".join((module, framework, *arguments))
        raise RuntimeError(f"{what} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(rounds: int = 3, workloads=tuple(WORKLOADS)) -> dict:
    """Median train and inference images/s per framework and workload, and the ratios."""
    frameworks = [f for f in FRAMEWORKS if f != "torch_eager"]
    skipped = {}
    if importlib.util.find_spec("torch") is None:
        skipped["torch_eager"] = "PyTorch is not installed: pip install '.[bench]'"
    else:
        frameworks.append("torch_eager")
    samples: dict = {w: {f: [] for f in frameworks} for w in workloads}
    for round_ in range(rounds):
        for workload in workloads:
            # Each round starts with another framework, so that none always runs in the
            # same place, after the same one (checked and unchecked, whose steps compile
            # to the same program, read 3-8% apart when one always ran first).
            shift = round_ % len(frameworks)
            for framework in frameworks[shift:] + frameworks[:shift]:
                result = in_fresh_process("benchmarks.training", framework, workload)
                samples[workload][framework].append(result)
                print(f"round {round_ + 1}: {workload} {framework} {result}", file=sys.stderr)
    table = {}
    for workload, by_framework in samples.items():
        medians = {
            framework: {key: statistics.median(r[key] for r in results) for key in results[0]}
            for framework, results in by_framework.items()
        }
        ours = medians["typedpipe"]
        row = {"frameworks": medians, "ratios": {}}
        for peer in ("flax_nnx", "torch_eager"):
            if peer in medians:
                row["ratios"][f"train_vs_{peer}"] = round(ours["train"] / medians[peer]["train"], 3)
                row["ratios"][f"inference_vs_{peer}"] = round(
                    ours["inference"] / medians[peer]["inference"], 3
                )
        unchecked = medians["typedpipe_unchecked"]["train"]
        row["contract_cost"] = round(1 - ours["train"] / unchecked, 4)
        table[workload] = row
    return {"rounds": rounds, "skipped": skipped, "workloads": table}


def markdown(result: dict, device: str) -> str:
    """The results as a markdown table (README and benchmarks/results/<device>.md)."""
    lines = [
        f"Training and inference, images/s on `{device}` (median of {result['rounds']} rounds):",
        "",
        "| workload | typedpipe train | Flax NNX train | PyTorch train | vs Flax | vs PyTorch "
        "| typedpipe infer | PyTorch infer | contract cost | GFLOP/s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]

    def cell(value, fmt="{:,.0f}"):
        return "n/a" if value is None else fmt.format(value)

    for workload, row in result["workloads"].items():
        f, r = row["frameworks"], row["ratios"]
        torch_ = f.get("torch_eager", {})
        lines.append(
            f"| {workload} | {cell(f['typedpipe']['train'])} | {cell(f['flax_nnx']['train'])} "
            f"| {cell(torch_.get('train'))} | {cell(r.get('train_vs_flax_nnx'), '{:.2f}x')} "
            f"| {cell(r.get('train_vs_torch_eager'), '{:.2f}x')} "
            f"| {cell(f['typedpipe']['inference'])} | {cell(torch_.get('inference'))} "
            f"| {row['contract_cost']:+.1%} "
            f"| {f['typedpipe']['flops_per_second'] / 1e9:.1f} |"
        )
    for framework, why in result["skipped"].items():
        lines.append(f"\n{framework} skipped: {why}")
    return "\n".join(lines) + "\n"


def chart(result: dict, device: str, path: Path) -> None:
    """Train images/s per workload and framework, as a grouped bar chart."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    workloads = list(result["workloads"])
    names = {"typedpipe": "typedpipe", "flax_nnx": "Flax NNX", "torch_eager": "PyTorch eager"}
    shown = [f for f in names if f in result["workloads"][workloads[0]]["frameworks"]]
    figure = Figure(figsize=(7, 3.5), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    x = np.arange(len(workloads))
    width = 0.8 / len(shown)
    for i, framework in enumerate(shown):
        values = [result["workloads"][w]["frameworks"][framework]["train"] for w in workloads]
        offset = (i - (len(shown) - 1) / 2) * width
        bars = axes.bar(x + offset, values, width, label=names[framework])
        axes.bar_label(bars, fmt="{:,.0f}", fontsize=7)
    axes.set_xticks(x, workloads)
    axes.set_yscale("log")  # workloads differ 50-fold; a ratio reads the same at any height
    axes.set_ylabel("training images/s (log scale)")
    axes.set_title(f"training throughput on {device}")
    axes.legend(frameon=False)
    axes.spines[["top", "right"]].set_visible(False)
    figure.savefig(path, dpi=120)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--one", nargs=2, metavar=("FRAMEWORK", "WORKLOAD"))
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(*args.one)))
        return 0
    print(json.dumps(run(args.rounds), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
