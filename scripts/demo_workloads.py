"""`DEMO_FULL=1 make demo`: a small pre-train, a LoRA fine-tune of it, then vLLM serving the result with
the adapter, all from the shipped examples (examples/pretrain.yaml, finetune-lora.yaml, inference.yaml)
with fewer steps and outputs in the demo's home. Returns what did not go as expected."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import httpx

from controlplane.cli.specfile import load_spec_file, validate_spec

ROOT = Path(__file__).resolve().parent.parent
FINAL = {"succeeded", "failed", "cancelled"}


def _wait(client: Any, job_id: str, until: Any, timeout: float, say: Any) -> dict:
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        job = client.get_job(job_id)
        p = job.get("progress") or {}
        step = p.get("step")
        shown = step // 10 * 10 if isinstance(step, int) else ""  # every 10th step, not every one
        line = f"{job['name']}: {job['status']} {shown}/{p.get('total', '')}".rstrip("/ ")
        if line != last:
            say(line)
            last = line
        if until(job) or job["status"] in FINAL:
            return job
        time.sleep(1.0)
    return client.get_job(job_id)


def _spec(name: str, **update: Any) -> dict:
    spec = load_spec_file(ROOT / "examples" / name)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(spec.get(key), dict):
            spec[key] = {**spec[key], **value}
        else:
            spec[key] = value
    return validate_spec(spec, name)


def run_workloads(client: Any, home: Path, say: Any, timeout: float = 1500.0) -> list[str]:
    """Pre-train -> LoRA fine-tune -> serve with the adapter; the problems found (empty: all good)."""
    out = home / "examples"
    pre = client.submit_job(_spec("pretrain.yaml", output=str(out / "pretrain"),
                                  training={"steps": 40, "checkpoint_every": 40, "eval_every": 0}))
    job = _wait(client, pre["id"], lambda j: False, timeout, say)
    if job["status"] != "succeeded":
        return [f"pre-train ended {job['status']}"]
    ft = client.submit_job(_spec("finetune-lora.yaml", base_model=str(out / "pretrain" / "model"),
                                 output=str(out / "lora"), training={"steps": 30, "checkpoint_every": 30}))
    job = _wait(client, ft["id"], lambda j: False, timeout, say)
    if job["status"] != "succeeded":
        return [f"fine-tune ended {job['status']}"]
    inf = client.submit_job(_spec("inference.yaml", model_path=str(out / "pretrain" / "model"),
                                  adapters=[{"name": "tiny-llama-qa", "path": str(out / "lora")}],
                                  env={"GPUPOOL_BIND_HOST": "127.0.0.1"}))
    job = _wait(client, inf["id"], lambda j: bool(j.get("endpoint")), timeout, say)
    problems = []
    try:
        if not job.get("endpoint"):
            return [f"inference ended {job['status']} without an endpoint"]
        key = job.get("api_key") or os.environ.get("DEMO_API_KEY")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        prompt = "Question: What is true about ice?\nAnswer:"
        for model in ("tiny-llama", "tiny-llama-qa"):
            r = httpx.post(job["endpoint"] + "/v1/completions", headers=headers, timeout=120,
                           json={"model": model, "prompt": prompt, "max_tokens": 16, "temperature": 0})
            if r.status_code != 200:
                problems.append(f"{model}: HTTP {r.status_code} {r.text[:200]}")
            else:
                say(f"{model} answers: {prompt!r} -> {r.json()['choices'][0]['text']!r}")
    finally:
        client.cancel_job(inf["id"])
    return problems
