"""`make demo`'s script end to end: `gpupool up` on simulated GPUs runs the examples as expected."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_demo_runs_the_examples_and_exits_zero(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPUPOOL_")}
    env.update({"DEMO_EXIT": "1", "DEMO_TIMEOUT": "150", "COLUMNS": "160", "TERM": "dumb",
                "DEMO_HOME": str(tmp_path / "home")})
    proc = subprocess.run([sys.executable, "scripts/demo.py"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=280)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "all demo jobs behaved as expected" in out
    assert "demo-unfit-eight-gpus is pending because" in out
    assert "shared GPU" in out
    assert "admin token" in out and "http://127.0.0.1:" in out
    # the pool was stopped: no `gpupool up` left behind for this home
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(tmp_path / "home") not in ps
