"""``python -m agent`` refuses bad configuration with one clear line (no traceback)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run(args, tmp_path, **env):
    e = {k: v for k, v in os.environ.items() if not k.startswith("GPUPOOL_")}
    e.update(env)
    return subprocess.run([sys.executable, "-m", "agent", "--state-dir", str(tmp_path / "st"),
                           "--exporter-port", "0", *args], cwd=ROOT, env=e, capture_output=True,
                          text=True, timeout=60)


@pytest.mark.parametrize("args,env,needle", [
    (["--simulate", "2xH100-80GB"], {}, "no bootstrap token"),
    (["--backend", "nvml", "--token", "t"], {}, "no NVIDIA driver"),
    (["--simulate", "3xNoSuchGPU", "--token", "t"], {}, "NoSuchGPU"),
    (["--mps", "off"], {"GPUPOOL_AGENT_SERVER_URL": "not a url"}, "server_url"),
])
def test_bad_config_exits_2_with_a_clear_message(tmp_path, args, env, needle):
    res = run(args, tmp_path, **env)
    assert res.returncode == 2, res.stdout + res.stderr
    assert needle in res.stderr and "Traceback" not in res.stderr + res.stdout
