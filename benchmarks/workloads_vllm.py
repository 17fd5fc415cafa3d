"""vLLM serving on this machine: output tokens/s and ms per output token of a tiny llama.

Saves a random tiny llama (+ tokenizer trained on the shipped corpus), serves it through the real
entry point (``python -m workloads.inference``), sends concurrent /v1/completions requests and reads
vLLM's own metrics. Prints one JSON line.
    .venv/bin/python benchmarks/workloads_vllm.py [--requests 32] [--concurrency 8] [--max-tokens 64]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from workloads.inference.metrics import TPOT, parse_prometheus  # noqa: E402
from workloads.pretrain.tiny import save_tiny_model  # noqa: E402


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=2)
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="gpupool-bench-vllm-")
    model = save_tiny_model(os.path.join(tmp, "tiny"), hidden=a.hidden, layers=a.layers, heads=max(a.hidden // 64, 1))
    port = _port()
    spec = {"name": "bench", "kind": "inference", "model_path": model, "dtype": "float32", "max_model_len": 256,
            "max_num_seqs": a.concurrency, "metrics_interval_s": 60}
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "workloads.inference", "--spec-json", json.dumps(spec)],
                            env={**os.environ, "GPUPOOL_PORT": str(port), "GPUPOOL_BIND_HOST": "127.0.0.1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    base = f"http://127.0.0.1:{port}"
    try:
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"vLLM exited with {proc.returncode}")
            try:
                if httpx.get(base + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() - t0 > 900:
                raise SystemExit("vLLM not ready after 900 s")
            time.sleep(1)
        startup = time.monotonic() - t0

        def one(i: int) -> int:
            r = httpx.post(base + "/v1/completions", timeout=300, json={
                "model": "bench", "prompt": f"Question {i}: where did Ada walk?", "max_tokens": a.max_tokens,
                "temperature": 0, "ignore_eos": True})
            r.raise_for_status()
            return int(r.json()["usage"]["completion_tokens"])

        one(0)  # warm-up
        before = parse_prometheus(httpx.get(base + "/metrics").text)
        t1 = time.monotonic()
        with ThreadPoolExecutor(a.concurrency) as pool:
            tokens = sum(pool.map(one, range(a.requests)))
        elapsed = time.monotonic() - t1
        after = parse_prometheus(httpx.get(base + "/metrics").text)
        name = next(n for n in TPOT if f"{n}_count" in after)
        d_sum = after[f"{name}_sum"] - before.get(f"{name}_sum", 0.0)
        d_count = after[f"{name}_count"] - before.get(f"{name}_count", 0.0)
        print(json.dumps({"benchmark": "workloads_vllm", "device": "cpu", "cores": os.cpu_count(),
                          "model": f"llama hidden {a.hidden} x {a.layers} layers (random)",
                          "requests": a.requests, "concurrency": a.concurrency, "max_tokens": a.max_tokens,
                          "output_tokens": tokens, "output_tokens_per_s": round(tokens / elapsed, 1),
                          "ms_per_output_token": round(1000 * d_sum / max(d_count, 1), 2),
                          "startup_s": round(startup, 1)}))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()


if __name__ == "__main__":
    main()
