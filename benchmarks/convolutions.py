"""Where resnet20's training step trails PyTorch: its 3x3 convolutions, one pass at a time.

The forward pass, input gradient and kernel gradient of resnet20's three 3x3
convolution shapes (batch 128, "same" padding), in milliseconds and GFLOP/s:
typedpipe's CPU lowering (XLA's own convolutions, set up as the `typedpipe`
command sets them up) against PyTorch's CPU kernels. Each framework runs in a fresh
process, and each figure is the median of `repeats` calls.

    python -m benchmarks.convolutions
    python -m benchmarks.convolutions --one typedpipe
"""

import argparse
import functools
import importlib.util
import json
import os
import statistics
import sys
import time
from collections.abc import Callable

from benchmarks.training import in_fresh_process

BATCH = 128
# name: (channels in and out, height = width)
SHAPES = {"16ch 32x32": (16, 32), "32ch 16x16": (32, 16), "64ch 8x8": (64, 8)}
PASSES = ("forward", "input_grad", "kernel_grad")


def _gflop(channels: int, size: int) -> float:
    """Multiply-adds of one pass, each counted as 2; the three passes are alike."""
    return 2 * BATCH * size * size * 9 * channels * channels / 1e9


def _median_ms(call: Callable[[], object], repeats: int) -> float:
    call()  # warm up: compile, allocate
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def _typedpipe(repeats: int) -> dict:
    from typedpipe.models.layers.lowering import conv2d, lowered_as
    from typedpipe.runtime import Settings, prepare

    prepare(Settings(steps=True))  # before JAX starts its backend, as the CLI does
    import jax

    results = {}
    for name, (channels, size) in SHAPES.items():
        keys = jax.random.split(jax.random.key(0), 3)
        x = jax.random.normal(keys[0], (BATCH, size, size, channels))
        kernel = jax.random.normal(keys[1], (3, 3, channels, channels))
        g = jax.random.normal(keys[2], (BATCH, size, size, channels))

        def conv(x, kernel):
            return conv2d(x, kernel, 1, "same")

        passes = {
            "forward": jax.jit(conv),
            "input_grad": jax.jit(lambda x, k, g: jax.vjp(lambda x: conv(x, k), x)[1](g)[0]),
            "kernel_grad": jax.jit(lambda x, k, g: jax.vjp(lambda k: conv(x, k), k)[1](g)[0]),
        }
        arguments = {
            "forward": (x, kernel),
            "input_grad": (x, kernel, g),
            "kernel_grad": (x, kernel, g),
        }
        with lowered_as("cpu"):  # read when each function is traced, on its first call
            results[name] = {
                step: _median_ms(functools.partial(_ready, f, *arguments[step]), repeats)
                for step, f in passes.items()
            }
    return results


def _ready(function, *arguments):
    import jax

    return jax.block_until_ready(function(*arguments))


def _torch(repeats: int) -> dict:
    import torch
    from torch.nn import grad
    from torch.nn.functional import conv2d

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    torch.manual_seed(0)
    results = {}
    for name, (channels, size) in SHAPES.items():
        x = torch.randn(BATCH, channels, size, size)
        kernel = torch.randn(channels, channels, 3, 3)
        g = torch.randn(BATCH, channels, size, size)
        passes = {
            "forward": functools.partial(conv2d, x, kernel, padding=1),
            "input_grad": functools.partial(grad.conv2d_input, x.shape, kernel, g, padding=1),
            "kernel_grad": functools.partial(grad.conv2d_weight, x, kernel.shape, g, padding=1),
        }
        with torch.no_grad():
            results[name] = {step: _median_ms(f, repeats) for step, f in passes.items()}
    return results


def measure(framework: str, repeats: int) -> dict:
    """Milliseconds per pass and shape, in this process."""
    return _typedpipe(repeats) if framework == "typedpipe" else _torch(repeats)


def run(repeats: int = 30) -> dict:
    """Per shape and pass: each framework's milliseconds and GFLOP/s, and typedpipe's
    speed relative to PyTorch's (above 1: typedpipe is faster)."""
    frameworks = ["typedpipe"]
    skipped = {}
    if importlib.util.find_spec("torch") is None:
        skipped["torch_eager"] = "PyTorch is not installed: pip install '.[bench]'"
    else:
        frameworks.append("torch_eager")
    measured = {
        framework: in_fresh_process("benchmarks.convolutions", framework, "--repeats", str(repeats))
        for framework in frameworks
    }
    table = {}
    for name, (channels, size) in SHAPES.items():
        rows = {}
        for step in PASSES:
            ms = {framework: measured[framework][name][step] for framework in frameworks}
            row = {f"{framework}_ms": round(value, 3) for framework, value in ms.items()}
            row |= {
                f"{framework}_gflops": round(_gflop(channels, size) / (value / 1000), 1)
                for framework, value in ms.items()
            }
            if "torch_eager" in ms:
                row["vs_torch_eager"] = round(ms["torch_eager"] / ms["typedpipe"], 3)
            rows[step] = row
        table[name] = rows
    return {"batch": BATCH, "repeats": repeats, "skipped": skipped, "shapes": table}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--one", metavar="FRAMEWORK", choices=("typedpipe", "torch_eager"))
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.repeats)))
        return 0
    print(json.dumps(run(args.repeats), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
