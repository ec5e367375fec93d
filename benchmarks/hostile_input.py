"""Hostile data is refused before it is allocated: the peak memory of `check` on two bombs.

- the npz label bomb: 100 images whose labels hold one value of 2**31 - 1 (class
  names were once built from `range(labels.max() + 1)`: an out-of-memory kill);
- the zip bomb: an `.npz` of about 1.3 MB whose `images` inflate to 1.3 GB.

Each runs `typedpipe check --json` in a fresh process; its peak RSS is the child's
own `ru_maxrss` (`os.wait4`). For scale: `check` on a valid 100-image npz (the floor
of a process that has imported JAX), and `np.load` of the zip bomb's images alone,
which is what reading it without the header check costs.
"""

import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

BOMB_SHAPE = (1300, 1000, 1000)  # 1.3 GB of uint8 zeros
CONFIG = """
[data]
source = "npz"
path = "{path}"

[[preprocess]]
op = "to_float"

[model]
input = [8, 8, 1]
num_classes = 10

[train]
batch_size = 16
"""


def _zip_bomb(path: Path) -> None:
    """Write the bomb without holding it: the member is streamed through deflate."""
    header = {"descr": "|u1", "fortran_order": False, "shape": BOMB_SHAPE}
    zeros = bytes(2**24)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        with archive.open("images.npy", "w", force_zip64=True) as member:
            np.lib.format.write_array_header_1_0(member, header)
            left = int(np.prod(BOMB_SHAPE))
            while left:
                member.write(zeros[: min(left, len(zeros))])
                left -= min(left, len(zeros))
        with archive.open("labels.npy", "w") as member:
            np.lib.format.write_array(member, np.arange(BOMB_SHAPE[0]) % 10)


def _peak(argv: list[str]) -> tuple[int, str, int]:
    """Run `argv` in a fresh process: its exit code, stdout and peak RSS in bytes."""
    with tempfile.TemporaryFile("w+") as out:
        child = subprocess.Popen(argv, stdout=out, stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(child.pid, 0)  # this child's own peak
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        return child.returncode, out.read(), usage.ru_maxrss * 1024  # KiB on Linux


def _check(tmp: Path, name: str, data: Path) -> dict:
    config = tmp / f"{name}.toml"
    config.write_text(CONFIG.format(path=data))
    code, out, peak = _peak([sys.executable, "-m", "typedpipe.cli", "check", str(config), "--json"])
    codes = [d["code"] for d in json.loads(out)["diagnostics"]]
    return {"exit": code, "codes": codes, "peak_rss_mib": round(peak / 2**20, 1)}


def run() -> dict:
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        images = np.zeros((100, 8, 8), np.uint8)
        labels = np.arange(100) % 10
        np.savez(tmp / "valid.npz", images=images, labels=labels)
        labels[7] = 2**31 - 1
        np.savez(tmp / "label_bomb.npz", images=images, labels=labels)
        _zip_bomb(tmp / "zip_bomb.npz")
        results = {
            "valid_npz": _check(tmp, "valid", tmp / "valid.npz"),
            "label_bomb": _check(tmp, "label_bomb", tmp / "label_bomb.npz"),
            "zip_bomb": _check(tmp, "zip_bomb", tmp / "zip_bomb.npz"),
        }
        results["zip_bomb"]["file_mib"] = round((tmp / "zip_bomb.npz").stat().st_size / 2**20, 2)
        results["zip_bomb"]["inflated_mib"] = round(int(np.prod(BOMB_SHAPE)) / 2**20, 1)
        load = f"import numpy as np; np.load({str(tmp / 'zip_bomb.npz')!r})['images']"
        _, _, peak = _peak([sys.executable, "-c", load])
        results["reference_np_load_zip_bomb_peak_rss_mib"] = round(peak / 2**20, 1)
    assert results["label_bomb"]["codes"] == ["labels.range"], results
    assert results["zip_bomb"]["codes"] == ["data.too_large"], results
    return results


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
