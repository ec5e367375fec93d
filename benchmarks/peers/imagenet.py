"""What every peer of the ImageNet-sized workloads shares: the optimizer and how a step is timed.

Each step must end on the host (a loss read, predictions copied back), so that the
clock stops when the work is done and not when it was queued.
"""

import time
from collections.abc import Callable

# AdamW on a constant rate, the gradient clipped to this global norm first: what
# benchmarks/configs/resnet50.toml and vit_s_16.toml give typedpipe (its `adamw`,
# `clip_global_norm`), so that every framework runs the same update.
LEARNING_RATE = 1e-3
WEIGHT_DECAY = 1e-4
EPSILON = 1e-8
CLIP_GLOBAL_NORM = 1.0


def rate(fn: Callable[[], object], batch_size: int, steps: int, compiled: bool) -> dict:
    """Images/s over `steps` calls of `fn` after two warm-up calls; for a compiled step also
    its compile time: the first call less the second, since the first compiles and runs.

    Example:
        >>> sorted(rate(lambda: None, batch_size=4, steps=2, compiled=True))
        ['compile_seconds', 'images_per_second']
    """
    started = time.perf_counter()
    fn()
    first = time.perf_counter() - started
    started = time.perf_counter()
    fn()
    second = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(steps):
        fn()
    result = {"images_per_second": batch_size * steps / (time.perf_counter() - started)}
    if compiled:
        result["compile_seconds"] = round(max(first - second, 0.0), 3)
    return result
