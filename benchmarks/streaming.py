"""Image folders stream: host memory does not grow with the number of files, and decoding
hides behind the train step.

For a folder of 3,000 and one of 30,000 64x64 PNGs, `typedpipe train` runs a fixed
number of steps in a fresh process; its peak RSS (`ru_maxrss` of the child) is
compared between the two, and its images/s (`metrics.json`, compilation excluded)
against `typedpipe bench` of the same config, whose batch is already in memory.
"""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

STEPS = 60
CONFIG = """
name = "streaming"
[data]
source = "imagefolder"
path = "{path}"

[[preprocess]]
op = "to_float"

[model]
name = "sequential"
input = [64, 64, 3]
layers = [{{type = "conv", features = 16, stride = 2, activation = "relu"}},
          {{type = "maxpool", window = 2}},
          {{type = "conv", features = 32, stride = 2, activation = "relu"}},
          {{type = "gap"}}, {{type = "dense", features = 10}}]

[train]
epochs = 1000
batch_size = 64
"""


def _write_folder(root: Path, count: int) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(count):
        folder = root / f"class{i % 10}"
        folder.mkdir(exist_ok=True)
        pixels = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i}.png", compress_level=1)


def _child(*argv: str) -> tuple[dict, int]:
    """Run `typedpipe ARGV --json` in a fresh process, as the command runs: its JSON and its
    peak RSS in bytes."""
    with tempfile.TemporaryFile("w+") as out:
        child = subprocess.Popen(
            [sys.executable, "-m", "typedpipe", *argv, "--json"],
            stdout=out,
            stderr=subprocess.DEVNULL,
        )
        _, status, usage = os.wait4(child.pid, 0)  # this child's own peak, not the largest yet
        child.returncode = os.waitstatus_to_exitcode(status)
        if child.returncode:
            raise RuntimeError(f"typedpipe {' '.join(argv)} exited {child.returncode}")
        out.seek(0)
        return json.loads(out.read()), usage.ru_maxrss * 1024  # KiB on Linux


def run(counts: tuple[int, ...] = (3_000, 30_000)) -> dict:
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for count in counts:
            root = Path(tmp) / f"folder{count}"
            root.mkdir()
            _write_folder(root, count)
            config = Path(tmp) / f"streaming{count}.toml"
            config.write_text(CONFIG.format(path=root))
            trained, peak = _child(
                "train",
                str(config),
                "--out",
                str(Path(tmp) / f"run{count}"),
                "--max-steps",
                str(STEPS),
            )
            results[count] = {
                "files": count,
                "peak_rss_bytes": peak,
                "train_images_per_second": trained["metrics"]["images_per_second"],
            }
        benched, _ = _child("bench", str(config), "--steps", str(STEPS))
    small, large = (results[c] for c in counts)
    return {
        "steps": STEPS,
        "runs": list(results.values()),
        "peak_rss_ratio": round(large["peak_rss_bytes"] / small["peak_rss_bytes"], 3),
        "bench_images_per_second": benched["images_per_second"],
        "train_over_bench": round(
            large["train_images_per_second"] / benched["images_per_second"], 3
        ),
    }


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
