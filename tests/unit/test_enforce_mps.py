"""Managed MPS: the agent starts and quits its own daemon (a stand-in binary records the calls)."""

import os
import stat

from agent.enforce.mps import MpsController

FAKE = """#!/bin/sh
# stand-in for nvidia-cuda-mps-control: records its env and commands, keeps a "control" pipe file
echo "args=$* pipe=$CUDA_MPS_PIPE_DIRECTORY log=$CUDA_MPS_LOG_DIRECTORY" >> "$MPS_CALLS"
if [ "$1" = "-d" ]; then touch "$CUDA_MPS_PIPE_DIRECTORY/control"; exit 0; fi
read cmd
echo "cmd=$cmd" >> "$MPS_CALLS"
if [ "$cmd" = "quit" ]; then rm -f "$CUDA_MPS_PIPE_DIRECTORY/control"; fi
[ -e "$CUDA_MPS_PIPE_DIRECTORY/control" ] || [ "$cmd" = "quit" ]
"""


def test_managed_daemon_lifecycle(tmp_path, monkeypatch):
    binary = tmp_path / "nvidia-cuda-mps-control"
    binary.write_text(FAKE)
    binary.chmod(binary.stat().st_mode | stat.S_IEXEC)
    calls = tmp_path / "calls.txt"
    monkeypatch.setenv("MPS_CALLS", str(calls))
    mps = MpsController("managed", tmp_path / "state", binary=str(binary))
    s = mps.settings()
    assert s.available and s.pipe_dir == str(tmp_path / "state" / "mps" / "pipe")
    assert (tmp_path / "state" / "mps" / "pipe" / "control").exists()
    # a second agent instance (restart) finds the running daemon instead of starting another
    again = MpsController("managed", tmp_path / "state", binary=str(binary))
    assert again.settings().available
    mps.stop()
    text = calls.read_text()
    assert text.count("args=-d") == 1 and "cmd=quit" in text
    assert f"pipe={tmp_path}/state/mps/pipe" in text
    assert not (tmp_path / "state" / "mps" / "pipe" / "control").exists()


def test_missing_binary_degrades_with_reason(tmp_path):
    mps = MpsController("managed", tmp_path, binary="no-such-mps-control-binary")
    s = mps.settings()
    assert not s.available and "not found" in s.detail


def test_off_when_not_applicable(tmp_path):
    mps = MpsController("managed", tmp_path, applicable=False, reason_off="simulated accelerators")
    assert mps.mode == "off" and mps.settings().detail == "simulated accelerators"


def test_bad_mode(tmp_path):
    import pytest

    with pytest.raises(ValueError, match="mps mode"):
        MpsController("sometimes", tmp_path)
    assert os.path.exists(tmp_path)
