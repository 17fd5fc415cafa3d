"""Packaged workloads through the pool: real server + two agent processes (simulated GPUs) on loopback.

A 2-node DeepSpeed pre-train finishes with both ranks' logs in the job; a tiny llama is served by
real vLLM: submitted, running, then /v1/completions answers at the endpoint the job shows.
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


def test_two_node_deepspeed_pretrain_finishes_with_both_ranks_logs(pool) -> None:
    api, root = pool
    spec = {"kind": "pretrain", "name": "pretrain-2node", "data": str(CORPUS), "output": str(root / "pt2"),
            "resources": {"gpu": 1, "nodes": 2, "cpu_milli": 500, "memory_mib": 1024},
            "model": {"hidden_size": 64, "num_layers": 2, "num_heads": 2, "max_seq_len": 128},
            "dataset": {"vocab_size": 400},
            "training": {"steps": 4, "micro_batch_size": 4, "seq_len": 32, "zero_stage": 2, "checkpoint_every": 2,
                         "eval_batches": 2}}
    job = api.submit(spec)
    done = api.wait_status(job["id"], "succeeded", timeout=400)
    assert {p["node"] for p in done["placement"]} == {"wl-n1", "wl-n2"}
    rank0 = api.http.get(f"/api/v1/jobs/{job['id']}/logs", params={"rank": 0, "tail": 5000}).text
    rank1 = api.http.get(f"/api/v1/jobs/{job['id']}/logs", params={"rank": 1, "tail": 5000}).text
    assert "world 2" in rank0 and "[rank 0]" in rank0, rank0[-2000:]
    assert "[rank 1]" in rank1, rank1[-2000:]
    assert done["progress"]["step"] == 4 and done["progress"].get("done") is True
    assert (root / "pt2" / "model" / "config.json").is_file()


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
