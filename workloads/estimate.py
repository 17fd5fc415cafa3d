"""GPU memory estimate of a workload and the request it suggests (pure arithmetic, no torch).

Model states follow DeepSpeed's own estimators for ZeRO 2 and 3 (``estimate_zero2/3_model_states
_mem_needs``: 2Ψ + 18Ψ/N and 4·largest_layer + 18Ψ/N), and what DeepSpeed really keeps for stages
0 and 1 (fp32 gradients next to the 16-bit ones: 20Ψ, and 4Ψ + 16Ψ/N, where the ZeRO paper counts
16Ψ and 4Ψ + 12Ψ/N). Activations follow Korthikanti et al. 2022, without the s² attention terms
that SDPA/flash attention never store. QLoRA bases take 4.127 bits/param (NF4 + double
quantisation, Dettmers et al. 2023) except embeddings and lm_head, which stay 16-bit. The world
size is the job's number of GPUs, the same the runtime gets (one rank per GPU).
docs/workloads.md lists the published figures the tests check against.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from workloads.spec_parts import ModelSpec, TrainingSpec

MIB = 1 << 20
GIB = 1 << 30
DEFAULT_GPU_MEMORY_MIB = 81559  # an H100-80GB, the reference for suggested fractions
CUDA_CONTEXT_BYTES = 600 * MIB  # PyTorch's CUDA context (lazy module loading) + cuBLAS/cuBLASLt workspaces
NCCL_BYTES = 512 * MIB  # NCCL buffers of one communicator: 4 MiB x channels x peers, ring and tree
DS_REDUCE_BUCKET = 500_000_000  # DeepSpeed's default reduce/all-gather bucket (elements), capped at the model
DS_PREFETCH_BUCKET = 50_000_000  # ZeRO-3's default parameter prefetch bucket (elements)
FRACTION_STEP = 0.05  # suggested fractions are multiples of this
GPUS_PER_NODE = 8  # a whole-GPU request beyond this becomes several nodes of this many
QLORA_BITS_PER_PARAM = 4.127  # NF4 with double-quantised block constants
INT4_BYTES_PER_PARAM = 0.5 + 0.03  # AWQ/GPTQ: 4-bit weights + 16-bit scales and zeros per group of 128
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
    return embedding_params(m) + m.num_layers * layer_params(m) + m.hidden_size * (1 if m.arch == "llama" else 2) + (
        m.max_seq_len * m.hidden_size if m.arch == "gpt2" else 0)


def embedding_params(m: ModelSpec) -> int:
    """Token embedding plus an untied lm_head (never quantised by QLoRA, AWQ or GPTQ)."""
    return m.vocab_size * m.hidden_size * (1 if m.tie_embeddings or m.arch == "gpt2" else 2)


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
    if method == "full":
        return count_params(m)
    r = getattr(adapter, "r", 8)
    nvt = getattr(adapter, "num_virtual_tokens", 8)
    enc = getattr(adapter, "encoder_hidden_size", 64)
    h, L = m.hidden_size, m.num_layers
    kv = (m.num_kv_heads or m.num_heads) * m.head_dim
    if method in ("lora", "qlora"):  # default targets: q and v projections
        return L * (r * (h + h) + r * (h + kv))
    if method == "ia3":  # k, v and the MLP down projection's input
        return L * (2 * kv + m.ffn_size)
    if method == "prefix":  # Li & Liang: prefixes reparameterised by an MLP (embedding -> enc -> 2·L·h)
        return nvt * h + h * enc + enc + enc * 2 * L * kv + 2 * L * kv
    if method == "p_tuning_v2":  # Liu et al.: a key and a value per virtual token per layer, no MLP
        return nvt * L * 2 * kv
    if method == "prompt":
        return nvt * h
    if method == "p_tuning":  # virtual tokens + MLP prompt encoder
        return nvt * h + h * enc + enc * enc + enc * h
    if method == "bottleneck":  # down + up projection with biases, after the MLP (pfeiffer) or both blocks
        width = max(h // getattr(adapter, "reduction_factor", 16), 1)
        per = 2 * h * width + width + h
        return L * per * (2 if getattr(adapter, "bottleneck", "pfeiffer") == "houlsby" else 1)
    raise ValueError(f"method: unknown fine-tuning method {method!r}")


# ---------------------------------------------------------------- model states


def weight_bytes(precision: str) -> int:
    return 4 if precision == "fp32" else 2


def model_states_bytes(params: int, *, zero_stage: int, world_size: int, precision: str = "bf16",
                       largest_layer: int = 0, offload_optimizer: bool = False) -> int:
    """Weights + gradients + Adam states per GPU for full training (bytes)."""
    n = max(world_size, 1)
    mixed = precision != "fp32"
    w, g = (2, 2) if mixed else (4, 4)
    # mixed precision keeps fp32 master weights, fp32 gradients, momentum and variance: 16 bytes
    opt = 16 if mixed else 8
    if zero_stage == 0:
        return (w + g + (0 if offload_optimizer else opt)) * params
    if zero_stage == 1:
        return (w + g) * params + (0 if offload_optimizer else opt * params // n)
    if zero_stage == 2:
        if offload_optimizer:
            return w * params
        # DeepSpeed: 2 = 16-bit params, 18 = 16-bit + 32-bit grads, 32-bit params, momentum, variance
        return w * params + ((18 if mixed else g + opt) * params) // n
    if offload_optimizer:
        return 4 * largest_layer + (w * params) // n
    return 4 * largest_layer + ((18 if mixed else w + g + opt) * params) // n


def activation_bytes(m: ModelSpec, micro_batch: int, seq_len: int, *, checkpointing: bool, precision: str,
                     attention: str = "sdpa") -> int:
    """Activations kept for the backward pass, plus the logits.

    Per layer in 16 bit (Korthikanti et al. 2022, §4, recounted per architecture): gpt2 34·sbh;
    llama (RMSNorm, rotary, SwiGLU, no dropout) 12·sbh + 4·sb·kv + 8·sb·ffn. SDPA and flash
    attention keep only a 4-byte log-sum-exp per head and token (4·sba); eager attention keeps
    the scores, softmax and dropout mask (5·as²b).
    """
    s, b, h, a = seq_len, micro_batch, m.hidden_size, m.num_heads
    kv = (m.num_kv_heads or a) * m.head_dim
    scale = 2 if precision == "fp32" else 1
    if m.arch == "gpt2":
        layer = 34 * s * b * h
    else:
        layer = 12 * s * b * h + 4 * s * b * kv + 8 * s * b * m.ffn_size
    attn = 5 * a * s * s * b * scale if attention == "eager" else 4 * s * b * a
    full_layer = layer * scale + attn
    if checkpointing:  # each layer keeps its input; one layer is recomputed at a time
        per_model = m.num_layers * 2 * s * b * h * scale + full_layer
    else:
        per_model = m.num_layers * full_layer
    logits = s * b * m.vocab_size * (2 + 4 + 4)  # 16-bit logits, fp32 upcast for the loss, its grad
    return per_model + logits


def deepspeed_bucket_bytes(params: int, zero_stage: int, precision: str) -> int:
    """DeepSpeed's gradient reduce buckets (and ZeRO-3's prefetch bucket), as engine.ds_config sets them."""
    if zero_stage == 0:
        return 0
    w = weight_bytes(precision)
    reduce = min(DS_REDUCE_BUCKET, params) * w
    if zero_stage == 3:  # overlap_comm: two reduce buffers, plus the prefetched parameters
        return 2 * reduce + min(DS_PREFETCH_BUCKET, params) * w
    return reduce


def runtime_overheads(world_size: int) -> dict[str, int]:
    """The CUDA context on every GPU, NCCL's buffers once there are peers."""
    parts = {"cuda_context": CUDA_CONTEXT_BYTES}
    if world_size > 1:
        parts["nccl"] = NCCL_BYTES
    return parts


# ---------------------------------------------------------------- estimates


def estimate_training(m: ModelSpec, t: TrainingSpec, *, method: str = "full", adapter: Any = None,
                      world_size: int = 1, precision: str | None = None) -> Estimate:
    """Per-GPU memory of pre-training or fine-tuning ``m`` with ``t`` on ``world_size`` GPUs."""
    prec = precision or ("bf16" if t.precision == "auto" else t.precision)
    params = count_params(m)
    trainable = trainable_params(m, method, adapter)
    n = max(world_size, 1)
    parts: dict[str, int] = {}
    if method == "full":
        parts["model_states"] = model_states_bytes(
            params, zero_stage=t.zero_stage, world_size=n, precision=prec,
            largest_layer=largest_layer_params(m), offload_optimizer=t.offload_optimizer)
    else:
        emb = embedding_params(m) if not m.params_b else m.vocab_size * m.hidden_size * 2
        if method == "qlora":  # 4-bit blocks; embeddings and lm_head stay 16-bit
            frozen = int((params - emb) * QLORA_BITS_PER_PARAM / 8) + emb * 2
        else:
            frozen = params * weight_bytes(prec)
        if t.zero_stage == 3 and method != "qlora":  # partitioned, one layer gathered at a time
            frozen = frozen // n + 2 * largest_layer_params(m) * weight_bytes(prec)
        parts["frozen_weights"] = frozen
        parts["adapter_states"] = model_states_bytes(trainable, zero_stage=0, world_size=1, precision="fp32")
    parts["activations"] = activation_bytes(m, t.micro_batch_size, t.seq_len, checkpointing=t.activation_checkpointing,
                                            precision=prec, attention=t.attention)
    parts["deepspeed_buckets"] = deepspeed_bucket_bytes(trainable, t.zero_stage, prec)
    parts.update(runtime_overheads(n))
    return Estimate(params=params, trainable_params=trainable, world_size=n, parts=parts)


def inference_weight_bytes(m: ModelSpec, params: int, quantization: str | None, dtype: str) -> int:
    """Weights in vLLM: 16/32-bit, fp8/int8, or 4-bit AWQ/GPTQ (embeddings and lm_head stay 16-bit)."""
    wbytes = 4.0 if dtype == "float32" else 2.0
    if not quantization:
        return int(params * wbytes)
    q = quantization.lower()
    per = 1.0 if q.startswith("fp8") or q in ("int8", "w8a8") else INT4_BYTES_PER_PARAM
    emb = min(embedding_params(m) if not m.params_b else m.vocab_size * m.hidden_size * 2, params)
    return int((params - emb) * per + emb * 2)


def estimate_inference(m: ModelSpec, *, quantization: str | None = None, kv_cache_dtype: str = "auto",
                       max_model_len: int | None = None, max_num_seqs: int = 64,
                       tensor_parallel_size: int = 1, pipeline_parallel_size: int = 1,
                       dtype: str = "auto") -> Estimate:
    """Per-GPU memory of serving ``m`` with vLLM: sharded weights + KV cache + activations."""
    params = count_params(m)
    shards = tensor_parallel_size * pipeline_parallel_size
    kv_bytes = 1 if kv_cache_dtype.startswith("fp8") else (4 if dtype == "float32" else 2)
    seq = max_model_len or m.max_seq_len
    kv_per_token = 2 * m.num_layers * (m.num_kv_heads or m.num_heads) * m.head_dim * kv_bytes
    kv = kv_per_token * seq * min(max_num_seqs, INFERENCE_KV_SEQS)
    parts = {
        "weights": inference_weight_bytes(m, params, quantization, dtype) // shards,
        "kv_cache": kv // shards,
        "activations": seq * m.vocab_size * 4 + seq * m.hidden_size * 16,
        **runtime_overheads(shards),
    }
    return Estimate(params=params, trainable_params=0, world_size=shards, parts=parts)


def _worlds(max_gpus: int) -> list[int]:
    """GPU counts a request can have: 1..8 on one node, then whole nodes of 8."""
    return [n for n in range(1, max_gpus + 1) if n <= GPUS_PER_NODE or n % GPUS_PER_NODE == 0]


def suggest(est_for_world: Any, *, gpu_memory_mib: int = DEFAULT_GPU_MEMORY_MIB, max_gpus: int = 64,
            fixed_world: int | None = None) -> Estimate:
    """Pick a fraction of one GPU or the fewest whole GPUs whose per-GPU need fits.

    ``est_for_world(n)`` returns the Estimate on n GPUs (ZeRO shards shrink with n).
    """
    usable = gpu_memory_mib * 0.95
    worlds = [fixed_world] if fixed_world else _worlds(max_gpus)
    for n in worlds:
        est = est_for_world(n)
        need = est.per_gpu_mib
        if n == 1 and need <= usable * 0.9 and not fixed_world:
            est.gpu = min(0.95, max(FRACTION_STEP, math.ceil(need / gpu_memory_mib / FRACTION_STEP) * FRACTION_STEP))
            est.gpu = round(est.gpu, 4)
            est.gpu_memory_mib = int(math.ceil(need / 256) * 256)
            return est
        if need <= usable:
            est.nodes = 1 if n <= GPUS_PER_NODE else n // GPUS_PER_NODE
            est.gpu = float(min(n, GPUS_PER_NODE))
            return est
    last = est_for_world(worlds[-1])
    raise ValueError(
        f"resources: the estimate ({last.per_gpu_mib} MiB per GPU on {worlds[-1]} GPUs) does not fit a "
        f"{gpu_memory_mib} MiB GPU; use ZeRO stage 3, offloading, (Q)LoRA or give resources explicitly"
    )


def estimate_spec(spec: Any, world_size: int = 1) -> Estimate:
    """The estimate of a packaged spec (pretrain, finetune, evaluate or inference)."""
    from workloads.model_config import model_of

    kind = spec.kind
    cache = getattr(spec, "hub_cache", None)
    if kind == "pretrain":
        return estimate_training(spec.model, spec.training, world_size=world_size)
    if kind == "finetune":
        m = spec.model or model_of(spec.base_model, "base_model", cache)
        return estimate_training(m, spec.training, method=spec.method, adapter=spec.adapter, world_size=world_size)
    if kind == "evaluate":
        m = spec.model or model_of(spec.model_path, "model_path", cache)
        return estimate_inference(m, max_model_len=spec.seq_len, max_num_seqs=spec.batch_size)
    if kind == "inference":
        m = spec.model or model_of(spec.model_path, "model_path", cache)
        return estimate_inference(
            m, quantization=spec.quantization, kv_cache_dtype=spec.kv_cache_dtype,
            max_model_len=spec.max_model_len, max_num_seqs=spec.max_num_seqs,
            tensor_parallel_size=spec.tensor_parallel_size,
            pipeline_parallel_size=spec.pipeline_parallel_size, dtype=spec.dtype)
    raise ValueError(f"kind: no estimate for {kind!r}")


def suggest_resources(spec: Any) -> dict[str, Any]:
    """The GPU part of a request (``gpu``, ``gpu_memory_mib``, ``nodes``) derived from the estimate."""
    if spec.kind == "inference":
        shards = spec.tensor_parallel_size * spec.pipeline_parallel_size
        est = suggest(lambda n: estimate_spec(spec), fixed_world=shards if shards > 1 else None)
    elif spec.kind == "evaluate":  # one process
        est = suggest(lambda n: estimate_spec(spec), max_gpus=1)
    else:  # training: ZeRO shards (and a ZeRO-3 adapter's base) shrink with more GPUs
        est = suggest(lambda n: estimate_spec(spec, world_size=n))
    return {"gpu": est.gpu, "gpu_memory_mib": est.gpu_memory_mib if est.gpu < 1 else 0, "nodes": est.nodes}
