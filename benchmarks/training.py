"""Training and inference speed against the peers: typedpipe against hand-written Flax NNX and
PyTorch eager on small CNNs, and against PyTorch eager, `torch.compile` and Keras 3 (JAX) on
ResNet-50 and ViT-S/16 at 224 px (issue 23).

Every (framework, workload) pair runs in a fresh interpreter, one at a time,
and the rounds interleave the frameworks, each round in a rotated order, so that
machine noise and warm caches hit them alike; the median round is reported.
typedpipe is measured with the step `typedpipe bench` times (the one `fit`
runs), contracts checked and, to price them, unchecked. Compile time is left
out of every rate and recorded beside it.

    python -m benchmarks.training            # all workloads, 3 rounds
    python -m benchmarks.training --rounds 1 --steps 1 --workloads resnet50   # a smoke run
    python -m benchmarks.training --one typedpipe seed_cnn

`python -m benchmarks.run training` reads the same three settings from
BENCH_TRAINING_ROUNDS, BENCH_TRAINING_STEPS and BENCH_TRAINING_WORKLOADS (names
separated by commas); unset, it runs every workload, 3 rounds, each its own steps.
A run of some workloads keeps the other workloads' last rows in benchmarks/results/.
"""

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

from typedpipe.runtime import Settings, huge_page_environment, prepare

ROOT = Path(__file__).parent.parent

SMALL_PEERS = ("flax_nnx", "torch_eager")
# The ImageNet-sized models against the frameworks people train them with; no hand-written
# Flax NNX peer for these (Keras runs them on JAX, as typedpipe does).
IMAGENET_PEERS = ("torch_eager", "torch_compile", "keras_jax")


class Workload(NamedTuple):
    config: str  # typedpipe's config; the peers are given the same shape, batch and classes
    shape: tuple[int, int, int]
    batch_size: int
    steps: int  # timed steps, after the warm-up
    num_classes: int = 10
    peers: tuple[str, ...] = SMALL_PEERS
    # typedpipe unchecked too, to price the contracts. They are checked while the step is
    # traced, so the price shows in small steps only; on the ImageNet-sized ones it would
    # cost a compile per round and read as noise.
    price_contracts: bool = True


IMAGENET = (224, 224, 3)
WORKLOADS = {
    "seed_cnn": Workload("benchmarks/configs/seed_cnn.toml", (64, 64, 3), 64, 30),
    "small_cnn": Workload("examples/digits.toml", (8, 8, 1), 64, 100),
    "resnet20": Workload("benchmarks/configs/resnet20.toml", (32, 32, 3), 128, 10),
    # A step takes seconds on 2 cores: a few of them; most of a run is compiling.
    "resnet50": Workload(
        "benchmarks/configs/resnet50.toml", IMAGENET, 16, 4, 1000, IMAGENET_PEERS, False
    ),
    "vit_s_16": Workload(
        "benchmarks/configs/vit_s_16.toml", IMAGENET, 16, 4, 1000, IMAGENET_PEERS, False
    ),
}
NAMES = {
    "typedpipe": "typedpipe",
    "flax_nnx": "Flax NNX",
    "torch_eager": "PyTorch eager",
    "torch_compile": "torch.compile",
    "keras_jax": "Keras (JAX)",
}
# The modules each peer imports; the PyTorch peers of the ImageNet-sized workloads
# build torchvision's and timm's models.
NEEDS = {
    "flax_nnx": ("flax",),
    "torch_eager": ("torch",),
    "torch_compile": ("torch",),
    "keras_jax": ("keras",),
}
TORCH_ZOO = ("torchvision", "timm")


def _measure_typedpipe(workload: str, checked: bool, steps: int) -> dict:
    from typedpipe import load_config
    from typedpipe.contracts import unchecked
    from typedpipe.pipeline.bench import bench_step

    prepare(Settings(steps=True, every_core=True))  # as `typedpipe bench` does
    config = load_config(ROOT / WORKLOADS[workload].config)
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


def _measure_peer(framework: str, workload: str, steps: int) -> dict:
    """A peer's two rates; a compiling peer reports each as a dict with its compile time."""
    peer = importlib.import_module(f"benchmarks.peers.{framework}")
    w = WORKLOADS[workload]
    arguments = (workload, w.shape, w.batch_size, steps, w.num_classes)
    train = peer.train_images_per_second(*arguments)
    inference = peer.inference_images_per_second(*arguments)
    result = {}
    for name, rate in (("train", train), ("inference", inference)):
        rate = rate if isinstance(rate, dict) else {"images_per_second": rate}
        result[name] = rate["images_per_second"]
        if "compile_seconds" in rate:
            key = "compile_seconds" if name == "train" else "inference_compile_seconds"
            result[key] = rate["compile_seconds"]
    return result


def measure(framework: str, workload: str, steps: int | None = None) -> dict:
    """One measurement, in this process; `steps` defaults to the workload's."""
    steps = steps or WORKLOADS[workload].steps
    if framework.startswith("typedpipe"):
        return _measure_typedpipe(workload, framework == "typedpipe", steps)
    return _measure_peer(framework, workload, steps)


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


def _missing(framework: str, workload: str) -> str | None:
    """Why `framework` cannot run `workload` here (a module it imports is not installed)."""
    needs = NEEDS.get(framework, ())
    if framework.startswith("torch") and WORKLOADS[workload].peers == IMAGENET_PEERS:
        needs += TORCH_ZOO
    absent = [name for name in needs if importlib.util.find_spec(name) is None]
    if absent:
        return f"{', '.join(absent)} not installed: make bench installs the [bench] extra"
    return None


def _frameworks(workload: str, skipped: dict) -> list[str]:
    """typedpipe (unchecked too where it prices the contracts), then the workload's peers
    that can run here; the others go into `skipped` with the reason."""
    frameworks = ["typedpipe"]
    if WORKLOADS[workload].price_contracts:
        frameworks.append("typedpipe_unchecked")
    for peer in WORKLOADS[workload].peers:
        why = _missing(peer, workload)
        if why:
            skipped[f"{peer} on {workload}"] = why
        else:
            frameworks.append(peer)
    return frameworks


def _median(results: list[dict]) -> dict:
    keys = {key for result in results for key in result}
    return {key: statistics.median(r[key] for r in results if key in r) for key in sorted(keys)}


def run(rounds: int | None = None, workloads=None, steps: int | None = None) -> dict:
    """Median train and inference images/s per framework and workload, and the ratios.
    Unset, the settings come from BENCH_TRAINING_ROUNDS, _STEPS and _WORKLOADS, else
    3 rounds of every workload at its own steps. A peer that fails is recorded and left out."""
    rounds = rounds or int(os.environ.get("BENCH_TRAINING_ROUNDS") or 3)
    steps = steps or int(os.environ.get("BENCH_TRAINING_STEPS") or 0) or None
    chosen = os.environ.get("BENCH_TRAINING_WORKLOADS")
    workloads = workloads or (chosen.split(",") if chosen else tuple(WORKLOADS))
    unknown = [w for w in workloads if w not in WORKLOADS]
    if unknown:
        raise ValueError(f"unknown workloads {unknown}; choose from {list(WORKLOADS)}")
    skipped: dict = {}
    frameworks = {w: _frameworks(w, skipped) for w in workloads}
    samples: dict = {w: {f: [] for f in frameworks[w]} for w in workloads}
    extra = ("--steps", str(steps)) if steps else ()
    for round_ in range(rounds):
        for workload in workloads:
            # Each round starts with another framework, so that none always runs in the
            # same place, after the same one (checked and unchecked, whose steps compile
            # to the same program, read 3-8% apart when one always ran first).
            order = frameworks[workload]
            shift = round_ % len(order)
            for framework in order[shift:] + order[:shift]:
                if f"{framework} on {workload}" in skipped:
                    continue  # it failed in an earlier round
                started = time.perf_counter()
                try:
                    result = in_fresh_process("benchmarks.training", framework, workload, *extra)
                except RuntimeError as error:
                    if framework.startswith("typedpipe"):
                        raise
                    skipped[f"{framework} on {workload}"] = f"failed: {str(error)[-300:]}"
                    samples[workload].pop(framework)
                    continue
                samples[workload][framework].append(result)
                took = f"{time.perf_counter() - started:.0f} s"
                print(
                    f"round {round_ + 1}: {workload} {framework} ({took}) {result}", file=sys.stderr
                )
    table = {}
    for workload, by_framework in samples.items():
        medians = {f: _median(results) for f, results in by_framework.items() if results}
        ours = medians["typedpipe"]
        row = {"frameworks": medians, "ratios": {}, "rounds": rounds}
        for peer in WORKLOADS[workload].peers:
            if peer in medians:
                for kind in ("train", "inference"):
                    ratio = ours[kind] / medians[peer][kind]
                    row["ratios"][f"{kind}_vs_{peer}"] = round(ratio, 3)
        if "typedpipe_unchecked" in medians:
            unchecked = medians["typedpipe_unchecked"]["train"]
            row["contract_cost"] = round(1 - ours["train"] / unchecked, 4)
        table[workload] = row
    return {"rounds": rounds, "steps": steps, "skipped": skipped, "workloads": table}


def merge(old: dict, new: dict) -> dict:
    """`new`'s workloads over `old`'s: a run of some workloads keeps the others' last rows."""
    ran = set(new["workloads"])
    # A row of a record from before rows kept their rounds ran the record's.
    kept = {w: {"rounds": old["rounds"], **row} for w, row in old.get("workloads", {}).items()}
    skipped = {k: v for k, v in old.get("skipped", {}).items() if k.split(" on ")[-1] not in ran}
    return {
        **new,
        "workloads": {**kept, **new["workloads"]},
        "skipped": {**skipped, **new["skipped"]},
    }


def _shown(result: dict) -> list[str]:
    """The frameworks with a number in any workload, or skipped in one (an n/a column
    then says so), in the order of NAMES."""
    present = {f for row in result["workloads"].values() for f in row["frameworks"]}
    present |= {key.split(" on ")[0] for key in result["skipped"]}
    return [f for f in NAMES if f in present]


def _cell(value, fmt=None) -> str:
    if value is None:
        return "n/a"
    # A ResNet-50 step on 2 cores runs a few images/s: keep a decimal below 100.
    return (fmt or ("{:,.1f}" if abs(value) < 100 else "{:,.0f}")).format(value)


def _lead(row: dict, kind: str) -> str:
    """typedpipe's rate over the fastest peer's, and which peer that is."""
    peers = {f: r[kind] for f, r in row["frameworks"].items() if not f.startswith("typedpipe")}
    if not peers:
        return "n/a"
    fastest = max(peers, key=peers.__getitem__)
    return f"{row['frameworks']['typedpipe'][kind] / peers[fastest]:.2f}x {NAMES[fastest]}"


def markdown(result: dict, device: str) -> str:
    """The results as markdown tables (README and benchmarks/results/<device>.md): training
    and inference images/s, each with typedpipe's lead over the fastest peer (below 1x it
    trails), and the compile times; n/a where a framework has no number."""
    shown = _shown(result)
    peers = [f for f in shown if f != "typedpipe"]
    heading = " | ".join(NAMES[f] for f in shown)
    rows = result["workloads"].items()
    rounds = sorted({row.get("rounds", result["rounds"]) for _, row in rows})
    lines = [f"Images/s on `{device}`, median of {' or '.join(map(str, rounds))} round(s).", ""]
    for kind, extra in (("train", " | contract cost | GFLOP/s"), ("inference", "")):
        lines += [
            f"| {kind} | {heading} | lead{extra} |",
            "| --- |" + " ---: |" * (len(shown) + 1 + extra.count("|")),
        ]
        for workload, row in rows:
            f = row["frameworks"]
            cells = [_cell(f.get(name, {}).get(kind)) for name in shown]
            line = f"| {workload} | {' | '.join(cells)} | {_lead(row, kind)}"
            if kind == "train":
                cost, flops = row.get("contract_cost"), f["typedpipe"].get("flops_per_second")
                line += f" | {_cell(cost, '{:+.1%}')} | {_cell(flops and flops / 1e9, '{:.1f}')}"
            lines.append(line + " |")
        lines.append("")
    compiling = [
        f for f in shown if any("compile_seconds" in r["frameworks"].get(f, {}) for _, r in rows)
    ]
    if compiling and peers:
        lines += [
            "Compile seconds of the train step (left out of the rates above):",
            "",
            f"| workload | {' | '.join(NAMES[f] for f in compiling)} |",
            "| --- |" + " ---: |" * len(compiling),
        ]
        for workload, row in rows:
            f = row["frameworks"]
            cells = [_cell(f.get(name, {}).get("compile_seconds"), "{:.1f}") for name in compiling]
            lines.append(f"| {workload} | {' | '.join(cells)} |")
    for framework, why in result["skipped"].items():
        lines.append(f"\n{framework} skipped: {why}")
    return "\n".join(lines).rstrip("\n") + "\n"


def chart(result: dict, device: str, path: Path) -> None:
    """Train and inference images/s per workload and framework, as grouped bar charts."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    workloads = list(result["workloads"])
    shown = _shown(result)
    figure = Figure(figsize=(12, 4), layout="constrained")
    FigureCanvasAgg(figure)
    x = np.arange(len(workloads))
    width = 0.8 / len(shown)
    for column, kind in enumerate(("train", "inference")):
        axes = figure.add_subplot(1, 2, column + 1)
        for i, framework in enumerate(shown):
            rows = [result["workloads"][w]["frameworks"].get(framework, {}) for w in workloads]
            has = [kind in row for row in rows]  # no bar where a framework has no number
            values = [row[kind] for row in rows if kind in row]
            offset = (i - (len(shown) - 1) / 2) * width
            bars = axes.bar(x[has] + offset, values, width, label=NAMES[framework])
            axes.bar_label(bars, labels=[_cell(v) for v in values], fontsize=6)
        axes.set_xticks(x, workloads)
        axes.set_yscale("log")  # workloads differ 1000-fold; a ratio reads the same at any height
        axes.set_ylabel(f"{kind} images/s (log scale)")
        axes.set_title(f"{kind} throughput on {device}")
        axes.spines[["top", "right"]].set_visible(False)
    axes.legend(frameon=False, fontsize=8)
    figure.savefig(path, dpi=120)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--one", nargs=2, metavar=("FRAMEWORK", "WORKLOAD"))
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--steps", type=int, help="timed steps (default: each workload's)")
    parser.add_argument("--workloads", nargs="+", choices=list(WORKLOADS))
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(*args.one, steps=args.steps)))
        return 0
    print(json.dumps(run(args.rounds, args.workloads, args.steps), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
