"""Does a pretrained backbone help? Pretrain on digits 0-4, fine-tune on 5-9 from 10 images a class.

Three runs on the same few images, for the same steps, scored on every other image
of 5-9:
- `scratch`: small_cnn from random weights;
- `fine_tuned`: `[model] weights` = the 0-4 run's bundle (a warm start: both heads
  have 5 classes, so the head is loaded too, and re-learns 5-9), everything trained at once;
- `fine_tuned_frozen`: the same with `freeze_epochs`: the new head alone first
  (batch statistics frozen), then everything, the backbone at `backbone_lr_mult`.
Each is repeated for `seeds` draws of the 10 images; the table gives the mean and range.

    python -m benchmarks.run transfer        # or: python -m benchmarks.transfer
"""

import json
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

IMAGES_PER_CLASS = 10
EPOCHS = 40
FREEZE_EPOCHS = 10

PRETRAIN = """
name = "digits-0-4"
seed = 0
[data]
source = "npz"
path = "{path}"
val_fraction = 0.1
test_fraction = 0.1
[[preprocess]]
op = "to_float"
scale = 0.00392156862745098
[model]
name = "small_cnn"
input = [8, 8, 1]
num_classes = 5
[train]
epochs = 15
batch_size = 64
learning_rate = 3e-3
"""

FINE_TUNE = """
name = "{name}"
seed = {seed}
[data]
source = "npz"
path = "{path}"
val_fraction = 0.0
test_fraction = 0.0
[[preprocess]]
op = "to_float"
scale = 0.00392156862745098
[model]
name = "small_cnn"
input = [8, 8, 1]
num_classes = 5
{weights}
[train]
epochs = {epochs}
batch_size = 10
learning_rate = 3e-3
{freeze}
"""

VARIANTS = {
    "scratch": ("", ""),
    "fine_tuned": ('weights = "{bundle}"', ""),
    "fine_tuned_frozen": (
        'weights = "{bundle}"',
        f"freeze_epochs = {FREEZE_EPOCHS}\nbackbone_lr_mult = 0.1",
    ),
}


def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    # scikit-learn's digits are 0..16: stored as uint8 0..255, as typedpipe's digits source does.
    images = np.round(digits.images * (255 / 16)).astype(np.uint8)[..., None]
    return images, digits.target.astype(np.int32)


def _accuracy(bundle: Path, images: np.ndarray, labels: np.ndarray) -> float:
    from typedpipe import ExportedModel

    model = ExportedModel(bundle)
    return float(model.evaluate(images, labels)["accuracy"])


def run(seeds: int = 3) -> dict:
    """Accuracy on the held-out 5-9 images per variant, over `seeds` draws of the few."""
    from typedpipe import load_config, train_run

    images, labels = _digits()
    low, high = labels < 5, labels >= 5
    results: dict[str, list[float]] = {name: [] for name in VARIANTS}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        np.savez(tmp / "low.npz", images=images[low], labels=labels[low])
        (tmp / "pretrain.toml").write_text(PRETRAIN.format(path=tmp / "low.npz"))
        pretrained = train_run(load_config(tmp / "pretrain.toml"), tmp / "pretrain")
        bundle = tmp / "pretrain" / "model"
        print(f"pretrained on 0-4: test accuracy {pretrained['test_accuracy']}", file=sys.stderr)
        for seed in range(seeds):
            rng = np.random.default_rng(seed)
            few = np.concatenate(
                [
                    rng.choice(np.flatnonzero(labels == c), IMAGES_PER_CLASS, replace=False)
                    for c in range(5, 10)
                ]
            )
            rest = np.setdiff1d(np.flatnonzero(high), few)
            data = tmp / f"few{seed}.npz"
            np.savez(data, images=images[few], labels=labels[few] - 5)
            for name, (weights, freeze) in VARIANTS.items():
                config = tmp / f"{name}{seed}.toml"
                config.write_text(
                    FINE_TUNE.format(
                        name=f"{name}-{seed}",
                        seed=seed,
                        path=data,
                        weights=weights.format(bundle=bundle),
                        epochs=EPOCHS,
                        freeze=freeze,
                    )
                )
                out = tmp / f"{name}{seed}"
                train_run(load_config(config), out)
                accuracy = _accuracy(out / "model", images[rest], labels[rest] - 5)
                results[name].append(accuracy)
                print(f"seed {seed}: {name} {accuracy:.4f}", file=sys.stderr)
    steps = EPOCHS * (5 * IMAGES_PER_CLASS // 10)
    return {
        "setup": (
            f"small_cnn pretrained on digits 0-4 (15 epochs); fine-tuned on 5-9 with "
            f"{IMAGES_PER_CLASS} images a class, {steps} steps each (batch 10, adam 3e-3); "
            f"freeze_epochs = {FREEZE_EPOCHS}; scored on every other image of 5-9"
        ),
        "pretrain_test_accuracy": pretrained["test_accuracy"],
        "seeds": seeds,
        "accuracy": {
            name: {
                "mean": round(statistics.mean(values), 4),
                "min": round(min(values), 4),
                "max": round(max(values), 4),
                "each": [round(v, 4) for v in values],
            }
            for name, values in results.items()
        },
    }


def markdown(result: dict) -> str:
    """The transfer table, for the README and benchmarks/results."""
    lines = [
        result["setup"] + ":",
        "",
        "| run | accuracy on held-out 5-9 (mean) | min | max |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, a in result["accuracy"].items():
        lines.append(f"| {name} | {a['mean']:.3f} | {a['min']:.3f} | {a['max']:.3f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
