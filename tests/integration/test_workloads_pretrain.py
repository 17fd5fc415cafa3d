"""Tiny pre-train through DeepSpeed (gloo, CPU) as real processes: loss falls, SIGTERM saves, restart resumes.

(The 2-rank run with the agent's rendezvous env is tested through the pool in test_workloads_pool.py.)"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("deepspeed")
pytest.importorskip("transformers")

from workloads.progress import parse  # noqa: E402

CORPUS = Path(__file__).resolve().parents[2] / "examples" / "corpus" / "stories.txt"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spec(out: Path, steps: int, zero: int = 2, **training: object) -> str:
    return json.dumps({
        "name": "tiny-pretrain", "kind": "pretrain", "data": str(CORPUS), "output": str(out),
        "model": {"hidden_size": 64, "num_layers": 2, "num_heads": 2, "max_seq_len": 128},
        "dataset": {"vocab_size": 400},
        "training": {"steps": steps, "micro_batch_size": 8, "seq_len": 48, "lr": 3e-3, "zero_stage": zero,
                     "checkpoint_every": 4, "eval_batches": 3, "log_every": 1, **training},
    })


def _start(spec: str, rank: int = 0, world: int = 1, port: int | None = None) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(port or _free_port()), "RANK": str(rank), "WORLD_SIZE": str(world),
           "LOCAL_RANK": "0", "NODE_RANK": str(rank), "GPUPOOL_CPU_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "workloads.pretrain", "--spec-json", spec], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _progress(lines: list[str]) -> list[dict]:
    return [p for p in (parse(line) for line in lines) if p is not None]


def test_pretrain_lowers_loss_stops_on_sigterm_and_resumes(tmp_path: Path) -> None:
    spec = _spec(tmp_path, steps=16)
    proc = _start(spec)
    lines: list[str] = []
    assert proc.stdout is not None
    deadline = time.monotonic() + 240
    for line in proc.stdout:
        lines.append(line)
        p = parse(line)
        if p and p.get("step", 0) >= 6 and "loss" in p:
            proc.send_signal(signal.SIGTERM)  # what the agent does on preemption
            break
        assert time.monotonic() < deadline, "".join(lines[-20:])
    lines += proc.stdout.read().splitlines(keepends=True)
    assert proc.wait(timeout=60) == 143, "".join(lines[-20:])
    first = _progress(lines)
    stopped = [p for p in first if p.get("event") == "preempted"]
    assert stopped and stopped[0]["step"] >= 6
    assert (tmp_path / "checkpoints" / f"step{stopped[0]['step']}").is_dir()

    again = _start(spec)  # exactly one process resumes (a second copy would race its checkpoints)
    out, _ = again.communicate(timeout=240)
    assert again.returncode == 0, out[-3000:]
    second = _progress(out.splitlines())
    resumed = [p for p in second if p.get("event") == "resumed"]
    assert resumed and resumed[0]["step"] == stopped[0]["step"]  # the step count continues
    steps = [p["step"] for p in second if "loss" in p and "done" not in p]
    assert steps[0] == stopped[0]["step"] + 1 and steps[-1] == 16
    done = [p for p in second if p.get("done")][0]
    initial = [p for p in first if p.get("step") == 0 and "val_loss" in p][0]
    assert done["val_loss"] < initial["val_loss"] - 0.5
    assert (tmp_path / "model" / "config.json").is_file() and (tmp_path / "model" / "tokenizer.json").is_file()
