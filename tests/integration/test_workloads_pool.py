"""Packaged workloads through the pool: real server + two agent processes (simulated GPUs) on loopback.

A 2-node DeepSpeed pre-train runs with both ranks' logs in the job, is cancelled mid-run (both ranks
checkpoint) and resumes when resubmitted; a tiny llama is served by real vLLM: submitted, running,
then /v1/completions answers at the endpoint the job shows.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.integration.e2e_agent_support import AgentProc, Api, ServerProc, wait_until

pytest.importorskip("deepspeed")
pytestmark = [pytest.mark.timeout(900), pytest.mark.slow]

CORPUS = Path(__file__).resolve().parents[2] / "examples" / "corpus" / "stories.txt"


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    root = tmp_path_factory.mktemp("workloads-pool")
    server = ServerProc(root, env={"GPUPOOL_HEARTBEAT_INTERVAL_S": "0.5", "GPUPOOL_HEARTBEAT_TIMEOUT_S": "30",
                                   "GPUPOOL_SCHEDULER_INTERVAL_S": "0.2", "GPUPOOL_LIVENESS_INTERVAL_S": "1"})
    server.start()
    agents = [AgentProc(server.url, server.bootstrap_token, root, f"wl-n{i}", gpus="1x1xH100-80GB")
              for i in (1, 2)]
    try:
        for a in agents:
            a.start().wait_connected()
        yield Api(server.url, server.admin_token), root
    finally:
        for a in agents:
            a.stop()
            a.reap_jobs()
        server.stop()


def _pretrain_spec(name: str, out: Path, steps: int) -> dict:
    return {"kind": "pretrain", "name": name, "data": str(CORPUS), "output": str(out), "grace_s": 60,
            "resources": {"gpu": 1, "nodes": 2, "cpu_milli": 500, "memory_mib": 1024},
            "model": {"hidden_size": 64, "num_layers": 2, "num_heads": 2, "max_seq_len": 128},
            "dataset": {"vocab_size": 400},
            "training": {"steps": steps, "micro_batch_size": 4, "seq_len": 32, "zero_stage": 2,
                         "checkpoint_every": 1000, "eval_batches": 2}}


def _logs(api: Api, job_id: str, rank: int) -> str:
    return api.http.get(f"/api/v1/jobs/{job_id}/logs", params={"rank": rank, "tail": 5000}).text


def test_two_node_deepspeed_pretrain_cancelled_then_resubmitted_resumes(pool) -> None:
    """2 nodes: both ranks' logs in the job; cancelled mid-run it checkpoints, resubmitted it resumes."""
    api, root = pool
    out = root / "pt2"
    first = api.submit(_pretrain_spec("pretrain-2node", out, steps=100_000))
    running = wait_until(lambda: ((j := api.job(first["id"]))["progress"] or {}).get("step", 0) >= 3 and j, 300,
                         "training progress", interval=0.2)
    assert {p["node"] for p in running["placement"]} == {"wl-n1", "wl-n2"}
    api.cancel(first["id"])  # the agents SIGTERM both ranks
    api.wait_status(first["id"], "cancelled", timeout=90)
    stopped = wait_until(lambda: "stopped by signal" in (t := _logs(api, first["id"], 1)) and t, 30, "rank 1 log")
    step = int(stopped.split("stopped by signal at step ")[1].split(";")[0])
    assert f"stopped by signal at step {step}" in _logs(api, first["id"], 0)  # both ranks agree on the step
    assert (out / "checkpoints" / f"step{step}").is_dir()

    second = api.submit(_pretrain_spec("pretrain-2node-resumed", out, steps=step + 3))
    done = api.wait_status(second["id"], "succeeded", timeout=300)
    rank0, rank1 = _logs(api, second["id"], 0), _logs(api, second["id"], 1)
    assert "world 2" in rank0 and f"resumed from checkpoint at step {step}" in rank0, rank0[-2000:]
    assert f"[rank 1] resumed from checkpoint at step {step}" in rank1, rank1[-2000:]
    assert done["progress"]["step"] == step + 3 and done["progress"].get("done") is True
    assert (out / "model" / "config.json").is_file()


def test_vllm_inference_served_through_the_pool(pool) -> None:
    pytest.importorskip("vllm")
    api, root = pool
    from workloads.pretrain.tiny import save_tiny_model

    model = save_tiny_model(str(root / "tiny-llama"), hidden=128, layers=2, heads=2, vocab_size=500)
    spec = {"kind": "inference", "name": "tiny-llama", "model_path": model, "dtype": "float32",
            "max_model_len": 256, "max_num_seqs": 4, "metrics_interval_s": 1, "grace_s": 20,
            "env": {"GPUPOOL_BIND_HOST": "127.0.0.1"}}
    job = api.submit(spec)
    assert 0 < job["request"]["gpu"] < 1  # derived from the estimate
    api.wait_status(job["id"], "running", timeout=60)
    ready = wait_until(lambda: (j := api.job(job["id"]))["endpoint"] and j, 420, "vLLM endpoint", interval=1)
    r = httpx.post(ready["endpoint"] + "/v1/completions", timeout=60,
                   json={"model": "tiny-llama", "prompt": "Ada walked to", "max_tokens": 12, "temperature": 0})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["usage"]["completion_tokens"] == 12 and body["choices"][0]["text"]
    served = wait_until(lambda: (p := (api.job(job["id"])["progress"] or {})).get("generation_tokens", 0) >= 12
                        and p, 30, "serving figures in the job's progress", interval=0.5)
    assert served["ms_per_output_token_avg"] > 0
    api.cancel(job["id"])
    api.wait_status(job["id"], "cancelled", timeout=60)
