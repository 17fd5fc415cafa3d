"""GPU memory estimate of a workload and the request it suggests (pure arithmetic, no torch).

Model states follow the ZeRO paper (Rajbhandari et al. 2020, 16 bytes/param for mixed-precision
Adam, stage 1 = 4Ψ + 12Ψ/N) and DeepSpeed's own estimators for stages 2 and 3
(``estimate_zero2/3_model_states_mem_needs``: 2Ψ + 18Ψ/N and 4·largest_layer + 18Ψ/N).
Activations follow Korthikanti et al. 2022 (sbh(34 + 5as/h) bytes per layer in 16 bit; 2sbh with
full recomputation). QLoRA bases take 4.127 bits/param (NF4 + double quantisation, Dettmers et al.
2023). docs/workloads.md lists the published figures the tests check against.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import Any

from workloads.spec_parts import ModelSpec, TrainingSpec

MIB = 1 << 20
GIB = 1 << 30
DEFAULT_GPU_MEMORY_MIB = 81559  # an H100-80GB, the reference for suggested fractions
CONTEXT_OVERHEAD_BYTES = 512 * MIB  # CUDA context, allocator slack, library workspaces
FRACTION_STEP = 0.05  # suggested fractions are multiples of this
QLORA_BITS_PER_PARAM = 4.127
INFERENCE_KV_SEQS = 16  # KV cache sized for this many full-length sequences (at most max_num_seqs)


@dataclass
class Estimate:
    """Memory per GPU (bytes) by part, and the request it suggests."""

    params: int
    trainable_params: int
    world_size: int
    parts: dict[str, int] = field(default_factory=dict)
    gpu: float = 0.0  # suggested request: fraction (<1) of one GPU or N whole GPUs
    gpu_memory_mib: int = 0  # suggested slice memory for a fraction
    nodes: int = 1

    @property
    def per_gpu_bytes(self) -> int:
        return sum(self.parts.values())

    @property
    def per_gpu_mib(self) -> int:
        return math.ceil(self.per_gpu_bytes / MIB)

    def as_dict(self) -> dict[str, Any]:
        return {
            "params": self.params,
            "trainable_params": self.trainable_params,
            "world_size": self.world_size,
            "per_gpu_mib": self.per_gpu_mib,
            "parts_mib": {k: round(v / MIB, 1) for k, v in self.parts.items()},
            "suggested": {"gpu": self.gpu, "gpu_memory_mib": self.gpu_memory_mib, "nodes": self.nodes},
        }


# ---------------------------------------------------------------- parameters


def count_params(m: ModelSpec) -> int:
    """Parameters of a llama- or gpt2-style decoder (``params_b`` wins when given)."""
    if m.params_b:
        return int(m.params_b * 1e9)
    return m.vocab_size * m.hidden_size * (1 if m.tie_embeddings or m.arch == "gpt2" else 2) + (
        m.num_layers * layer_params(m)
    ) + m.hidden_size * (1 if m.arch == "llama" else 2) + (m.max_seq_len * m.hidden_size if m.arch == "gpt2" else 0)


def layer_params(m: ModelSpec) -> int:
    """Parameters of one transformer block."""
    h, f = m.hidden_size, m.ffn_size
    kv = (m.num_kv_heads or m.num_heads) * m.head_dim
    if m.arch == "gpt2":  # fused qkv + proj + 2-matrix MLP, all with biases, 2 layer norms
        return 3 * h * h + 3 * h + h * h + h + 2 * h * f + f + h + 4 * h
    return 2 * h * h + 2 * h * kv + 3 * h * f + 2 * h  # q,o + k,v + gate/up/down + 2 RMSNorms


def largest_layer_params(m: ModelSpec) -> int:
    """The largest single parameter tensor group ZeRO-3 gathers at once (embedding or a block)."""
    if m.params_b:  # unknown layout: assume the embedding of the given vocab/hidden
        return max(m.vocab_size * m.hidden_size, int(m.params_b * 1e9) // max(m.num_layers, 1) // 12)
    return max(m.vocab_size * m.hidden_size, layer_params(m))


def trainable_params(m: ModelSpec, method: str, adapter: Any = None) -> int:
    """Parameters a method trains (adapter defaults when ``adapter`` is None)."""
    total = count_params(m)
    if method == "full":
        return total
    r = getattr(adapter, "r", 8)
    nvt = getattr(adapter, "num_virtual_tokens", 8)
    enc = getattr(adapter, "encoder_hidden_size", 64)
    h, L = m.hidden_size, m.num_layers
    kv = (m.num_kv_heads or m.num_heads) * m.head_dim
    if method in ("lora", "qlora"):  # default targets: q and v projections
        return L * (r * (h + h) + r * (h + kv))
    if method == "ia3":  # k, v and the MLP down projection's input
        return L * (2 * kv + m.ffn_size)
    if method in ("prefix", "p_tuning_v2"):  # a key and a value per virtual token per layer
        return nvt * L * 2 * h
    if method == "prompt":
        return nvt * h
    if method == "p_tuning":  # virtual tokens + MLP prompt encoder
        return nvt * h + h * enc + enc * enc + enc * h
    raise ValueError(f"method: unknown fine-tuning method {method!r}")


# ---------------------------------------------------------------- model states


def weight_bytes(precision: str) -> int:
    return 4 if precision == "fp32" else 2


def model_states_bytes(params: int, *, zero_stage: int, world_size: int, precision: str = "bf16",
                       largest_layer: int = 0, offload_optimizer: bool = False) -> int:
    """Weights + gradients + Adam states per GPU for full training (bytes)."""
    n = max(world_size, 1)
    mixed = precision != "fp32"
    w, g, o = (2, 2, 12) if mixed else (4, 4, 8)
    if zero_stage == 0:
        return (w + g + (0 if offload_optimizer else o)) * params
    if zero_stage == 1:
        return (w + g) * params + (0 if offload_optimizer else o * params // n)
    if zero_stage == 2:
        if offload_optimizer:
            return w * params
        # DeepSpeed: 2 = 16-bit params, 18 = 16-bit + 32-bit grads, 32-bit params, momentum, variance
        return w * params + ((18 if mixed else g + o) * params) // n
    if offload_optimizer:
        return 4 * largest_layer + (w * params) // n
    return 4 * largest_layer + ((18 if mixed else w + g + o) * params) // n


def activation_bytes(m: ModelSpec, micro_batch: int, seq_len: int, *, checkpointing: bool, precision: str) -> int:
    """Activations kept for the backward pass (Korthikanti et al. 2022) plus the logits."""
    s, b, h, a = seq_len, micro_batch, m.hidden_size, m.num_heads
    scale = 2 if precision == "fp32" else 1
    full_layer = s * b * h * 34 + 5 * a * s * s * b
    if checkpointing:
        per_model = m.num_layers * 2 * s * b * h + full_layer
    else:
        per_model = m.num_layers * full_layer
    logits = s * b * m.vocab_size * (2 + 4 + 4)  # 16-bit logits, fp32 upcast for the loss, its grad
    return per_model * scale + logits


# ---------------------------------------------------------------- estimates


def estimate_training(m: ModelSpec, t: TrainingSpec, *, method: str = "full", adapter: Any = None,
                      world_size: int = 1, precision: str | None = None) -> Estimate:
    """Per-GPU memory of pre-training or fine-tuning ``m`` with ``t`` on ``world_size`` GPUs."""
    prec = precision or ("bf16" if t.precision == "auto" else t.precision)
    params = count_params(m)
    trainable = trainable_params(m, method, adapter)
    parts: dict[str, int] = {}
    if method == "full":
        parts["model_states"] = model_states_bytes(
            params, zero_stage=t.zero_stage, world_size=world_size, precision=prec,
            largest_layer=largest_layer_params(m), offload_optimizer=t.offload_optimizer)
    else:
        base_bytes = QLORA_BITS_PER_PARAM / 8 if method == "qlora" else weight_bytes(prec)
        parts["frozen_weights"] = int(params * base_bytes)
        parts["adapter_states"] = model_states_bytes(trainable, zero_stage=0, world_size=1, precision="fp32")
    parts["activations"] = activation_bytes(
        m, t.micro_batch_size, t.seq_len, checkpointing=t.activation_checkpointing, precision=prec)
    parts["overhead"] = CONTEXT_OVERHEAD_BYTES
    return Estimate(params=params, trainable_params=trainable, world_size=world_size, parts=parts)


def estimate_inference(m: ModelSpec, *, quantization: str | None = None, kv_cache_dtype: str = "auto",
                       max_model_len: int | None = None, max_num_seqs: int = 64,
                       tensor_parallel_size: int = 1, pipeline_parallel_size: int = 1,
                       dtype: str = "auto") -> Estimate:
    """Per-GPU memory of serving ``m`` with vLLM: sharded weights + KV cache + activations."""
    params = count_params(m)
    shards = tensor_parallel_size * pipeline_parallel_size
    wbytes = 4.0 if dtype == "float32" else 2.0
    if quantization:
        q = quantization.lower()
        wbytes = 1.0 if q.startswith("fp8") or q in ("int8", "w8a8") else 0.5 + 0.03  # 4-bit + scales
    kv_bytes = 1 if kv_cache_dtype.startswith("fp8") else (4 if dtype == "float32" else 2)
    seq = max_model_len or m.max_seq_len
    kv_per_token = 2 * m.num_layers * (m.num_kv_heads or m.num_heads) * m.head_dim * kv_bytes
    kv = kv_per_token * seq * min(max_num_seqs, INFERENCE_KV_SEQS)
    parts = {
        "weights": int(params * wbytes) // shards,
        "kv_cache": kv // shards,
        "activations": seq * m.vocab_size * 4 + seq * m.hidden_size * 16,
        "overhead": CONTEXT_OVERHEAD_BYTES,
    }
    return Estimate(params=params, trainable_params=0, world_size=shards, parts=parts)


def suggest(est_for_world: Any, *, gpu_memory_mib: int = DEFAULT_GPU_MEMORY_MIB, gpus_per_node: int = 8,
            max_gpus: int = 64, fixed_world: int | None = None) -> Estimate:
    """Pick a fraction of one GPU or the fewest whole GPUs whose per-GPU need fits.

    ``est_for_world(n)`` returns the Estimate on n GPUs (ZeRO shards shrink with n).
    """
    usable = gpu_memory_mib * 0.95
    worlds = [fixed_world] if fixed_world else range(1, max_gpus + 1)
    for n in worlds:
        est = est_for_world(n)
        need = est.per_gpu_mib
        if n == 1 and need <= usable * 0.9 and not fixed_world:
            est.gpu = min(0.95, max(FRACTION_STEP, math.ceil(need / gpu_memory_mib / FRACTION_STEP) * FRACTION_STEP))
            est.gpu = round(est.gpu, 4)
            est.gpu_memory_mib = int(math.ceil(need / 256) * 256)
            return est
        if need <= usable:
            est.nodes = 1 if n <= gpus_per_node else math.ceil(n / gpus_per_node)
            est.gpu = float(n if n <= gpus_per_node else gpus_per_node)
            return est
    last = est_for_world(worlds[-1])
    raise ValueError(
        f"resources: the estimate ({last.per_gpu_mib} MiB per GPU on {worlds[-1]} GPUs) does not fit a "
        f"{gpu_memory_mib} MiB GPU; use ZeRO stage 3, offloading, (Q)LoRA or give resources explicitly"
    )


def model_from_dir(path: str | None) -> ModelSpec | None:
    """Read a local HF config.json into a ModelSpec (None when absent or unreadable)."""
    if not path:
        return None
    try:
        with open(os.path.join(path, "config.json"), encoding="utf-8") as f:
            c = json.load(f)
        h = int(c.get("hidden_size") or c.get("n_embd"))
        heads = int(c.get("num_attention_heads") or c.get("n_head"))
        return ModelSpec(
            arch="gpt2" if c.get("model_type") == "gpt2" else "llama",
            hidden_size=h,
            num_layers=int(c.get("num_hidden_layers") or c.get("n_layer")),
            num_heads=heads,
            num_kv_heads=c.get("num_key_value_heads") or None,
            intermediate_size=c.get("intermediate_size") or c.get("n_inner") or None,
            vocab_size=int(c["vocab_size"]),
            max_seq_len=int(c.get("max_position_embeddings") or c.get("n_positions") or 2048),
            tie_embeddings=bool(c.get("tie_word_embeddings", False)),
        )
    except (OSError, ValueError, TypeError, KeyError):
        return None


def estimate_spec(spec: Any, world_size: int = 1) -> Estimate:
    """The estimate of a packaged spec (pretrain, finetune, evaluate or inference)."""
    kind = spec.kind
    if kind == "pretrain":
        return estimate_training(spec.model, spec.training, world_size=world_size)
    if kind == "finetune":
        m = spec.model or model_from_dir(spec.base_model) or ModelSpec()
        return estimate_training(m, spec.training, method=spec.method, adapter=spec.adapter, world_size=world_size)
    if kind == "evaluate":
        m = spec.model or model_from_dir(spec.model_path) or ModelSpec()
        return estimate_inference(m, max_model_len=spec.seq_len, max_num_seqs=spec.batch_size)
    if kind == "inference":
        m = spec.model or model_from_dir(spec.model_path) or ModelSpec()
        return estimate_inference(
            m, quantization=spec.quantization, kv_cache_dtype=spec.kv_cache_dtype,
            max_model_len=spec.max_model_len, max_num_seqs=spec.max_num_seqs,
            tensor_parallel_size=spec.tensor_parallel_size,
            pipeline_parallel_size=spec.pipeline_parallel_size, dtype=spec.dtype)
    raise ValueError(f"kind: no estimate for {kind!r}")


def suggest_resources(spec: Any) -> Any:
    """Resources derived from the estimate, for a spec submitted without ``resources``."""
    from workloads.specs import Resources

    if spec.kind == "inference":
        shards = spec.tensor_parallel_size * spec.pipeline_parallel_size
        est = suggest(lambda n: estimate_spec(spec), fixed_world=shards if shards > 1 else None)
    elif spec.kind == "finetune" and spec.method != "full" or spec.kind == "evaluate":
        est = suggest(lambda n: estimate_spec(spec), max_gpus=1)
    else:
        est = suggest(lambda n: estimate_spec(spec, world_size=n))
    return Resources(gpu=est.gpu, gpu_memory_mib=est.gpu_memory_mib if est.gpu < 1 else 0, nodes=est.nodes)
