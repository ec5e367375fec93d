"""Is the training loop as fast as its step? `typedpipe train` against `typedpipe bench`.

`bench` times the train step on one batch already on the device; `train` feeds
every step its own batch (gathered from the split held on the device, where it
fits, as it does here) and runs the callbacks (progress, numeric guard, history,
checkpoints). Its images/s (`metrics.json`: steps after the first, validation and
checkpoints excluded; reading the split happens before the first step) over
bench's is the loop's efficiency; the goal is at least 0.9. Measured on the
built-in digits config and on a folder of 3,000 64x64 PNGs, for 3 epochs and for
10, each command in a fresh process, alternating, the median of `rounds`.
"""

import json
import statistics
import tempfile
from pathlib import Path

from benchmarks.streaming import CONFIG, _child, _write_folder

ROOT = Path(__file__).parent.parent


def _ratio(config: Path, out: Path, rounds: int, train_args: tuple[str, ...]) -> dict:
    trained, benched = [], []
    for round_ in range(rounds):
        run = _child("train", str(config), "--out", str(out / f"run{round_}"), *train_args)
        trained.append(run[0]["metrics"]["images_per_second"])
        benched.append(_child("bench", str(config), "--steps", "100")[0]["images_per_second"])
    train, bench = statistics.median(trained), statistics.median(benched)
    return {
        "train_images_per_second": round(train, 1),
        "bench_images_per_second": round(bench, 1),
        "train_over_bench": round(train / bench, 3),
    }


def run(rounds: int = 3) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        digits = _ratio(ROOT / "examples" / "digits.toml", tmp / "digits", rounds, ())
        folder = tmp / "images"
        folder.mkdir()
        _write_folder(folder, 3_000)
        results = {"digits": digits}
        for epochs in (3, 10):
            config = tmp / f"folder{epochs}.toml"
            config.write_text(
                CONFIG.format(path=folder).replace("epochs = 1000", f"epochs = {epochs}")
            )
            name = f"imagefolder_3000_{epochs}_epochs"
            results[name] = _ratio(config, tmp / name, rounds, ())
    return results


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
