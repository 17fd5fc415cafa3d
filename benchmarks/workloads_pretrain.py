"""Tiny pre-train throughput on this machine: tokens/s through DeepSpeed (gloo on CPU) per ZeRO stage.

Runs the real entry point (``python -m workloads.pretrain``) on the shipped corpus and reads the
final progress line. Prints one JSON line.
    .venv/bin/python benchmarks/workloads_pretrain.py [--steps 30] [--stages 0,2] [--hidden 128]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from workloads.progress import parse  # noqa: E402


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(stage: int, steps: int, hidden: int, layers: int, seq: int, batch: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="gpupool-bench-pt-") as out:
        spec = {"name": "bench-pretrain", "kind": "pretrain", "data": str(ROOT / "examples/corpus/stories.txt"),
                "output": out, "model": {"hidden_size": hidden, "num_layers": layers, "num_heads": max(hidden // 64, 1),
                                         "max_seq_len": max(seq, 128)},
                "dataset": {"vocab_size": 1000},
                "training": {"steps": steps, "micro_batch_size": batch, "seq_len": seq, "zero_stage": stage,
                             "checkpoint_every": 10 * steps, "eval_batches": 2, "log_every": steps}}
        t0 = time.monotonic()
        p = subprocess.run([sys.executable, "-m", "workloads.pretrain", "--spec-json", json.dumps(spec)],
                           capture_output=True, text=True, cwd=ROOT, timeout=1800,
                           env={**os.environ, "MASTER_PORT": str(_port()), "PYTHONUNBUFFERED": "1"})
        wall = time.monotonic() - t0
    if p.returncode != 0:
        raise SystemExit(f"pretrain failed ({p.returncode}):\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
    done = [x for x in map(parse, p.stdout.splitlines()) if x and x.get("done")][0]
    return {"tokens_per_s": round(done["tokens_per_s"], 1), "val_loss_start": round(done["first_val_loss"], 3),
            "val_loss_end": round(done["val_loss"], 3), "wall_s": round(wall, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--stages", default="0,2")
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--batch", type=int, default=8)
    a = ap.parse_args()
    result = {"benchmark": "workloads_pretrain", "device": "cpu", "cores": os.cpu_count(), "steps": a.steps,
              "hidden": a.hidden, "layers": a.layers, "seq_len": a.seq, "micro_batch": a.batch}
    for stage in (int(s) for s in a.stages.split(",")):
        result[f"zero{stage}"] = run(stage, a.steps, a.hidden, a.layers, a.seq, a.batch)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
