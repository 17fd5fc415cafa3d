"""Pure parts of the workloads: data cleaning/dedupe/split, batch order, vLLM argv and metrics, Ray argv, precision."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from workloads.data.blocks import BatchOrder
from workloads.inference.metrics import ServingMeter, parse_prometheus
from workloads.inference.ray_cluster import start_argv
from workloads.inference.server import memory_utilization, vllm_argv, vllm_env
from workloads.specs import InferenceSpec, TrainingSpec
from workloads.training.engine import ds_config
from workloads.training.runtime import WorkloadError, choose_precision, read_spec_json


def test_batch_order_is_resumable_and_ranks_disjoint() -> None:
    a, b = BatchOrder(100, 4, seed=3), BatchOrder(100, 4, seed=3)
    assert [a.indices(i) for i in range(60)] == [b.indices(i) for i in range(60)]
    assert BatchOrder(100, 4, seed=3).indices(37) == a.indices(37)  # a fresh order (restart) agrees
    r0, r1 = BatchOrder(100, 4, 3, rank=0, world=2), BatchOrder(100, 4, 3, rank=1, world=2)
    assert not set(r0.indices(5)) & set(r1.indices(5))


def test_precision_choice() -> None:
    assert choose_precision("auto", "cpu", False) == ("fp32", None)
    assert choose_precision("bf16", "cpu", False)[0] == "fp32"
    assert choose_precision("auto", "cuda", True) == ("bf16", None)
    assert choose_precision("auto", "cuda", False) == ("fp16", None)
    assert choose_precision("bf16", "cuda", False)[0] == "fp16"


def test_deepspeed_config_follows_the_spec() -> None:
    t = TrainingSpec(zero_stage=3, grad_accum=4, micro_batch_size=2, offload_optimizer=True)
    cfg = ds_config(t, "bf16")
    assert cfg["zero_optimization"]["stage"] == 3 and cfg["zero_optimization"]["offload_optimizer"]["device"] == "cpu"
    assert cfg["gradient_accumulation_steps"] == 4 and cfg["bf16"]["enabled"] and not cfg["fp16"]["enabled"]
    assert cfg["zero_allow_untested_optimizer"] is True


def test_vllm_command_line_and_memory_share(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    spec = InferenceSpec(name="srv", model_path=str(tmp_path), quantization="awq", kv_cache_dtype="fp8",
                         tensor_parallel_size=2, max_model_len=1024, max_num_seqs=16, resources={"gpu": 2})
    env = {"GPUPOOL_PORT": "9123", "GPUPOOL_VLLM_GPU_MEMORY_UTILIZATION": "0.25"}
    argv = vllm_argv(spec, env, distributed=True)
    flags = {a: argv[i + 1] for i, a in enumerate(argv[:-1]) if a.startswith("--")}
    assert argv[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
    assert flags["--port"] == "9123" and flags["--gpu-memory-utilization"] == "0.25"
    assert flags["--quantization"] == "awq" and flags["--kv-cache-dtype"] == "fp8"
    assert flags["--tensor-parallel-size"] == "2" and flags["--max-model-len"] == "1024"
    assert "--distributed-executor-backend" in argv and argv[argv.index("--distributed-executor-backend") + 1] == "ray"
    assert memory_utilization(SimpleNamespace(gpu_memory_utilization=None), {"GPUPOOL_MEMORY_FRACTION": "0.5"}) == 0.5
    assert memory_utilization(SimpleNamespace(gpu_memory_utilization=0.7), env) == 0.7
    assert vllm_env({"GPUPOOL_MEMORY_MIB": "8192"}, on_gpu=False)["VLLM_CPU_KVCACHE_SPACE"] == "4"
    with pytest.raises(ValueError, match="GPUPOOL_PORT"):
        vllm_argv(spec, {"GPUPOOL_PORT": "http"})
    with pytest.raises(ValueError, match="no config.json"):
        vllm_argv(spec.model_copy(update={"model_path": str(tmp_path / "nope")}), env)


METRICS = """# HELP vllm:generation_tokens_total Number of generation tokens processed.
vllm:generation_tokens_total{engine="0",model_name="m"} %d
vllm:num_requests_running{engine="0",model_name="m"} 1.0
vllm:inter_token_latency_seconds_sum{engine="0",model_name="m"} %f
vllm:inter_token_latency_seconds_count{engine="0",model_name="m"} %d
"""


LATENCIES = """vllm:time_to_first_token_seconds_sum{engine="0"} %f
vllm:time_to_first_token_seconds_count{engine="0"} %d
vllm:e2e_request_latency_seconds_sum{engine="0"} %f
vllm:e2e_request_latency_seconds_count{engine="0"} %d
vllm:kv_cache_usage_perc{engine="0"} 0.25
vllm:request_success_total{engine="0",finished_reason="length"} %d
"""


def test_serving_meter_turns_scrapes_into_rates() -> None:
    m = ServingMeter()
    first = m.update(100.0, parse_prometheus(METRICS % (100, 1.0, 100) + LATENCIES % (0.2, 2, 1.0, 2, 2)))
    assert first["generation_tokens"] == 100 and first["ms_per_output_token_avg"] == pytest.approx(10.0)
    assert first["ttft_ms_avg"] == pytest.approx(100.0) and first["e2e_latency_ms_avg"] == pytest.approx(500.0)
    assert first["kv_cache_usage"] == 0.25 and first["requests_finished"] == 2
    second = m.update(110.0, parse_prometheus(METRICS % (300, 1.4, 300) + LATENCIES % (0.5, 3, 3.0, 3, 3)))
    assert second["tokens_per_s"] == pytest.approx(20.0)
    assert second["ms_per_output_token"] == pytest.approx(2.0)
    assert second["ttft_ms"] == pytest.approx(300.0) and second["e2e_latency_ms"] == pytest.approx(2000.0)
    assert second["requests_running"] == 1.0
    assert "tokens_per_s" not in first  # no interval yet, unless the meter knows when serving began
    from_start = ServingMeter(started_at=95.0).update(100.0, parse_prometheus(METRICS % (100, 1.0, 100)))
    assert from_start["tokens_per_s"] == pytest.approx(20.0)


def test_ray_cluster_commands() -> None:
    head = start_argv(0, "127.0.0.1", 6379, gpus=8, cpus=32, temp_dir="/tmp/r", exe="ray", ports=[1, 2, 3, 4, 5, 6, 7])
    worker = start_argv(1, "127.0.0.1", 6379, gpus=8, cpus=32, temp_dir="/tmp/r", exe="ray",
                        object_store_bytes=1 << 28)
    assert head[:3] == ["ray", "start", "--head"] and "--port=6379" in head and "--block" in head
    assert "--dashboard-agent-listen-port=5" in head  # no fixed port a second raylet on the host would clash on
    assert "--ray-client-server-port=7" in head
    # workers on random ports, never Ray's default range, which may hold the job's MASTER_PORT
    assert {"--min-worker-port=0", "--max-worker-port=0"} <= set(head) & set(worker)
    # Ray rewrites 127.0.0.1 to the host's network address: a single-host gang stays on 127.0.0.2
    assert "--address=127.0.0.2:6379" in worker and "--head" not in worker and "--num-gpus=8" in worker
    assert "--node-ip-address=127.0.0.2" in head and "--object-store-memory=268435456" in worker
    remote = start_argv(1, "node-0.pool", 6379, gpus=8, cpus=32, temp_dir="/tmp/r", exe="ray")
    assert "--address=node-0.pool:6379" in remote and not any(a.startswith("--node-ip-address") for a in remote)


def test_vllm_serves_lora_adapters_and_gets_the_api_key_from_env(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    for name, r in (("a", 8), ("b", 24)):
        (tmp_path / name / "adapter").mkdir(parents=True)
        (tmp_path / name / "adapter" / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": r}))
    spec = InferenceSpec(name="srv", model_path=str(tmp_path / "m"), resources={"gpu": 1},
                         adapters=[{"name": "a", "path": str(tmp_path / "a")},
                                   {"name": "b", "path": str(tmp_path / "b" / "adapter")}])
    argv = vllm_argv(spec, {"GPUPOOL_PORT": "8001", "GPUPOOL_API_KEY": "sk-secret"}, on_gpu=True)
    assert "sk-secret" not in " ".join(argv) and "--enforce-eager" not in argv  # CUDA graphs on a GPU
    i = argv.index("--lora-modules")
    assert argv[i + 1:i + 3] == [f"a={tmp_path / 'a' / 'adapter'}", f"b={tmp_path / 'b' / 'adapter'}"]
    assert argv[argv.index("--max-lora-rank") + 1] == "32" and argv[argv.index("--max-loras") + 1] == "2"
    assert "--enforce-eager" in vllm_argv(spec, {}, on_gpu=False)
    env = vllm_env({"GPUPOOL_API_KEY": "sk-secret"}, on_gpu=True)
    assert env["VLLM_API_KEY"] == "sk-secret" and "GPUPOOL_API_KEY" not in env
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "adapter_config.json").write_text(json.dumps({"peft_type": "PREFIX_TUNING"}))
    with pytest.raises(ValueError, match="adapters.c: .* is a PREFIX_TUNING adapter"):
        vllm_argv(spec.model_copy(update={"adapters": [spec.adapters[0].model_copy(
            update={"name": "c", "path": str(tmp_path / "c")})]}), {})
    with pytest.raises(ValueError, match="holds no LoRA adapter .* run its fine-tune job first"):
        vllm_argv(spec.model_copy(update={"adapters": [spec.adapters[0].model_copy(
            update={"path": str(tmp_path / "none")})]}), {})


def test_launcher_ranks_and_exit_codes() -> None:
    from workloads.training.launcher import exit_code, rank_env, wanted

    base = {"GPUPOOL_NNODES": "2", "GPUPOOL_NODE_RANK": "1", "GPUPOOL_NPROC_PER_NODE": "2", "MASTER_PORT": "1"}
    env = rank_env(base, 1)
    assert (env["RANK"], env["LOCAL_RANK"], env["WORLD_SIZE"], env["LOCAL_WORLD_SIZE"], env["NODE_RANK"]) == \
        ("3", "1", "4", "2", "1")
    assert wanted(base) and not wanted(env) and not wanted({"GPUPOOL_NPROC_PER_NODE": "1"})
    assert exit_code([0, 0]) == 0 and exit_code([143, 0]) == 143 and exit_code([143, 7]) == 7
    assert exit_code([-9, 0]) == 1


def test_launch_plan_carries_the_spec_grace() -> None:
    from workloads.launch import build_launch

    plan = build_launch({"kind": "pretrain", "name": "p", "grace_s": 123.0}, rank=0, world_size=1)
    assert plan.env["GPUPOOL_GRACE_S"] == "123.0"


def test_spec_argument_errors() -> None:
    with pytest.raises(WorkloadError, match="usage"):
        read_spec_json([])
    with pytest.raises(WorkloadError, match="not valid JSON"):
        read_spec_json(["--spec-json", "{nope"])


def test_relative_input_paths_resolve_against_cwd_data_root_then_checkout(tmp_path: Path, monkeypatch) -> None:
    from workloads.paths import REPO_ROOT, resolve_path, resolve_spec_paths
    from workloads.specs import parse_job_spec

    monkeypatch.chdir(tmp_path)
    assert resolve_path("examples/corpus/stories.txt") == str(REPO_ROOT / "examples/corpus/stories.txt")
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "mine.txt").write_text("x")
    monkeypatch.setenv("GPUPOOL_DATA_ROOT", str(tmp_path / "root"))
    assert resolve_path("mine.txt") == str(tmp_path / "root" / "mine.txt")
    (tmp_path / "mine.txt").write_text("y")  # the job's working directory comes first
    assert resolve_path("mine.txt") == str(tmp_path / "mine.txt")
    assert resolve_path("/abs/missing") == "/abs/missing" and resolve_path("nowhere.txt") == "nowhere.txt"
    spec = resolve_spec_paths(parse_job_spec({"kind": "pretrain", "name": "p", "data": "mine.txt", "output": "out"}))
    assert spec.data == str(tmp_path / "mine.txt") and spec.output == "out"


def test_topology_of_a_member_a_launched_rank_and_a_plain_process(monkeypatch) -> None:
    from workloads.training.runtime import topology

    for k in ("GPUPOOL_NNODES", "GPUPOOL_NODE_RANK", "GPUPOOL_NPROC_PER_NODE", "RANK", "WORLD_SIZE", "LOCAL_RANK",
              "LOCAL_WORLD_SIZE", "NODE_RANK"):
        monkeypatch.delenv(k, raising=False)
    assert topology().progress_fields() == {"world_size": 1, "ranks_per_node": 1, "nodes": 1, "node_rank": 0}
    monkeypatch.setenv("GPUPOOL_NNODES", "2")  # the agent's member process (nproc 1: it is the rank)
    monkeypatch.setenv("GPUPOOL_NODE_RANK", "1")
    monkeypatch.setenv("GPUPOOL_NPROC_PER_NODE", "1")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    t = topology()
    assert (t.rank, t.world_size, t.node_rank, t.nodes) == (1, 2, 1, 2)
    from workloads.training.launcher import rank_env

    monkeypatch.setenv("GPUPOOL_NPROC_PER_NODE", "2")
    import os

    for k, v in rank_env(dict(os.environ), 1).items():  # a rank the member's launcher started
        monkeypatch.setenv(k, v)
    t = topology()
    assert (t.rank, t.world_size, t.local_rank, t.ranks_per_node, t.node_rank, t.nodes) == (3, 4, 1, 2, 1, 2)


def test_a_ray_head_that_exits_fails_the_wait_at_once() -> None:
    import subprocess
    import sys

    from workloads.inference.ray_cluster import wait_for_head

    head = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    with pytest.raises(ValueError, match="the Ray head exited with code 3"):
        wait_for_head("127.0.0.1", 9, head, timeout_s=30)
