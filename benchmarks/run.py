"""`make bench`: run every benchmark and write benchmarks/results/<device>.json."""

import json
import platform
import re
import sys
from datetime import UTC, datetime
from pathlib import Path

import jax

from benchmarks import contract_overhead, folder_check, hostile_input, import_time, streaming

RESULTS = Path(__file__).parent / "results"


def main() -> int:
    device = jax.devices()[0]
    kind = f"{device.platform}-{device.device_kind}"
    record = {
        "device": kind,
        "device_count": jax.device_count(),
        "host": platform.processor() or platform.machine(),
        "jax": jax.__version__,
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "contract_overhead": contract_overhead.run(),
        "folder_check": folder_check.run(),
        "import_time": import_time.run(),
        "streaming": streaming.run(),
        "hostile_input": hostile_input.run(),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{re.sub(r'[^A-Za-z0-9.]+', '-', kind).strip('-').lower()}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    json.dump(record, sys.stdout, indent=2)
    print(f"\nwritten to {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
