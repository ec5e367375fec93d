"""What `import typedpipe` costs beyond the libraries it cannot do without.

Each import runs in a fresh interpreter (a warm file cache, a cold module cache),
interleaved round by round so machine noise hits both alike; the median counts.
The baseline imports jax, flax.nnx, optax, jaxtyping and beartype.
"""

import statistics
import subprocess
import sys
import time

BASELINE = "import jax, flax.nnx, optax, jaxtyping, beartype"
TYPEDPIPE = "import typedpipe"


def _seconds(statement: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", statement], check=True)
    return time.perf_counter() - started


def run(rounds: int = 7) -> dict:
    _seconds(TYPEDPIPE)  # warm the file cache and the bytecode
    times: dict[str, list[float]] = {BASELINE: [], TYPEDPIPE: []}
    for _ in range(rounds):
        for statement in times:
            times[statement].append(_seconds(statement))
    baseline, ours = (statistics.median(times[s]) for s in (BASELINE, TYPEDPIPE))
    return {
        "baseline": BASELINE,
        "baseline_seconds": round(baseline, 3),
        "typedpipe_seconds": round(ours, 3),
        "ratio": round(ours / baseline, 3),
        "rounds": rounds,
    }


if __name__ == "__main__":
    print(run())
