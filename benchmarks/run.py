"""`make bench`: run every benchmark and write benchmarks/results/<device>.json, with the
training comparison as <device>.md (a table) and <device>.png (a chart).

    python -m benchmarks.run                    # everything
    python -m benchmarks.run training loop      # some; the file keeps the others' last results
"""

import json
import os
import platform
import re
import sys
from datetime import UTC, datetime
from pathlib import Path

import jax

from benchmarks import (
    contract_overhead,
    convolutions,
    folder_check,
    hostile_input,
    import_time,
    loop,
    streaming,
    training,
    transfer,
)

RESULTS = Path(__file__).parent / "results"
BENCHMARKS = {
    "training": training.run,
    "loop": loop.run,
    "convolutions": convolutions.run,
    "contract_overhead": contract_overhead.run,
    "folder_check": folder_check.run,
    "import_time": import_time.run,
    "streaming": streaming.run,
    "hostile_input": hostile_input.run,
    "transfer": transfer.run,
}


def main() -> int:
    chosen = sys.argv[1:] or list(BENCHMARKS)
    unknown = [name for name in chosen if name not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmark {unknown}; choose from {list(BENCHMARKS)}", file=sys.stderr)
        return 2
    device = jax.devices()[0]
    kind = f"{device.platform}-{device.device_kind}"
    stem = re.sub(r"[^A-Za-z0-9.]+", "-", kind).strip("-").lower()
    path = RESULTS / f"{stem}.json"
    record = json.loads(path.read_text()) if path.exists() else {}
    record |= {
        "device": kind,
        "device_count": jax.device_count(),
        "cores": len(os.sched_getaffinity(0)),
        "host": platform.processor() or platform.machine(),
        "jax": jax.__version__,
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    for name in chosen:
        print(f"running {name}", file=sys.stderr)
        result = BENCHMARKS[name]()
        if name == "training" and "training" in record:  # some workloads: keep the others
            result = training.merge(record["training"], result)
        record[name] = result
        # After each one: a benchmark that fails keeps the results of those before it.
        path.write_text(json.dumps(record, indent=2) + "\n")
    if "training" in record:
        (RESULTS / f"{stem}.md").write_text(training.markdown(record["training"], kind))
        training.chart(record["training"], kind, RESULTS / f"{stem}.png")
    if "transfer" in record:
        (RESULTS / f"{stem}-transfer.md").write_text(transfer.markdown(record["transfer"]))
    json.dump(record, sys.stdout, indent=2)
    print(f"\nwritten to {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
