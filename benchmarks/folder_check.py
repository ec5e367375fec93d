"""How long does `check` take on a folder of small PNGs, and what does loading cost?

Writes `count` random 32x32 RGB PNGs (10 classes) to a temporary folder, then
times, in one process:
- `survey`: typedpipe's audit (every header, every PNG's chunk CRCs, a decoded sample);
- `check`: the survey plus the whole pipeline check, train step compile included;
- `read_all`: typedpipe reading every file once through its loader (Grain, batches of 64);
- the reference: a plain Python loop decoding every file with Pillow, as a naive
  loader (or a check that decodes everything) would.
"""

import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from typedpipe import check_pipeline, parse_config
from typedpipe.pipeline.sources import batches


def _write_folder(root: Path, count: int, classes: int = 10) -> None:
    rng = np.random.default_rng(0)
    for i in range(count):
        folder = root / f"class{i % classes}"
        folder.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i}.png")


def _timed(fn):
    started = time.perf_counter()
    result = fn()
    return result, round(time.perf_counter() - started, 3)


def run(count: int = 10_000) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _write_folder(root, count)
        config = parse_config(
            f'[data]\nsource = "imagefolder"\npath = "{root}"\n'
            '[[preprocess]]\nop = "to_float"\n[model]\ninput = [32, 32, 3]\n'
        )
        source = config.source()
        survey, survey_seconds = _timed(source.survey)
        diagnostics, check_seconds = _timed(lambda: check_pipeline(config))
        records = source.records(survey)
        read, read_seconds = _timed(  # the images, not the last batch's padding
            lambda: sum(int(b.mask.sum()) for b in batches(records, np.arange(count), 64))
        )
        paths = sorted(root.rglob("*.png"))
        _, naive_seconds = _timed(lambda: [np.asarray(Image.open(p)) for p in paths])
    assert not diagnostics and read == count
    return {
        "files": count,
        "survey_seconds": survey_seconds,
        "check_seconds": check_seconds,
        "read_all_seconds": read_seconds,
        "reference_sequential_decode_seconds": naive_seconds,
    }
