"""Two `typedpipe train` processes on this machine, joined by jax.distributed (CPU, gloo)."""

import json
import os
import socket
import subprocess
import sys

from typedpipe import load_config, train_run
from typedpipe.pipeline.config import default_config_path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_two_processes_train_as_one(tmp_path):
    env = dict(
        os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=1"
    )
    env.pop("TYPEDPIPE_FAILPOINT", None)
    port = free_port()
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "typedpipe.cli",
                "train",
                "--epochs",
                "2",
                "--out",
                "run",
                "--coordinator",
                f"127.0.0.1:{port}",
                "--num-processes",
                "2",
                "--process-id",
                str(index),
                "--json",
            ],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for index in (0, 1)
    ]
    outputs = [p.communicate(timeout=240) for p in processes]
    assert [p.returncode for p in processes] == [0, 0], [err[-2000:] for _, err in outputs]
    reported = json.loads(outputs[0][0])  # the first process reports, once
    assert outputs[1][0] == "" and "epoch" not in outputs[1][1]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics == reported["metrics"]
    assert (metrics["processes"], metrics["devices"]) == (2, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # one run folder, nothing else

    config = load_config(default_config_path())
    alone = train_run(config, tmp_path / "alone", epochs=2)
    # The same global batches in the same order: the same run, up to summation order.
    assert abs(metrics["test_accuracy"] - alone["test_accuracy"]) <= 0.01
    assert metrics["steps"] == alone["steps"]
