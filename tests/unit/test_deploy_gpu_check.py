"""scripts/gpu-check-agent.sh without a GPU: the dry run says so, and a rehearsal exercises the plumbing.

The rehearsal runs the real check code (slice jobs as start orders run by the agent's own runtime,
its slice environment, telemetry attribution through the process tree, the memory watchdog)
against the simulated backend with GPU-less workers. The GPU itself is only exercised on a GPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "gpu-check-agent.sh"


def _run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable}
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=timeout)


def _has_gpu() -> bool:
    import pynvml

    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return False
    pynvml.nvmlShutdown()
    return True


@pytest.mark.skipif(_has_gpu(), reason="this machine has an NVIDIA GPU")
def test_dry_run_says_no_gpu():
    result = _run("--require-gpu")
    assert result.returncode == 2, result.stderr
    summary = json.loads(result.stdout)
    assert summary["mode"] == "dry" and summary["ok"] is None
    assert summary["reason"].startswith("no NVIDIA GPU: no NVIDIA driver found")
    assert "no NVIDIA GPU" in result.stderr
    assert summary["replayed_inventory"][0]["model"] == "H100-80GB"
    assert _run().returncode == 0  # without --require-gpu a missing GPU is not a failure


def test_rehearsal_watchdog_and_telemetry(tmp_path):
    out = tmp_path / "summary.json"
    result = _run("--rehearse", "--seconds", "2", "--out", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads(result.stdout)
    assert summary == json.loads(out.read_text())
    assert summary["mode"] == "rehearsal" and summary["ok"] is True, summary
    dog = summary["watchdog"]
    # the agent's own runtime ran the slice jobs and its watchdog stopped the one growing past its slice
    assert dog["reason"].startswith("slice memory exceeded: used ")
    assert dog["stopped_after_crossing_s"] <= 2.0
    assert dog["offender_exit_code"] in (137, 143)  # SIGTERM honoured, else SIGKILL
    rows = summary["telemetry"]["per_job"]
    # Each neighbour's memory as telemetry attributed it (worker = child of the job's shell).
    assert [r["telemetry_mib"] for r in rows] == [2048 + 500, 3072 + 500, 4096 + 500]
    assert all(r["error_pct"] == 0 for r in rows)
    assert summary["escape"]["visible_env"] is None  # the job really ran without CUDA_VISIBLE_DEVICES
