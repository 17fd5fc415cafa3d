"""Building blocks of the packaged workload specs: model, data set, training and adapter settings.

Kept apart from ``specs.py`` so each part stays small; light imports only (pydantic).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Precision = Literal["auto", "fp32", "bf16", "fp16"]
FinetuneMethod = Literal["full", "lora", "qlora", "prefix", "prompt", "p_tuning", "p_tuning_v2", "ia3", "bottleneck"]
PEFT_METHODS: tuple[str, ...] = ("lora", "qlora", "prefix", "prompt", "p_tuning", "p_tuning_v2", "ia3", "bottleneck")
PROMPT_METHODS: tuple[str, ...] = ("prefix", "prompt", "p_tuning", "p_tuning_v2")  # virtual tokens, no packing


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class ModelSpec(_Strict):
    """A causal LM: weights from ``path`` (continued pre-training) or an architecture built from a config."""

    path: str | None = Field(None, description="local model directory or hub model id: start from its weights")
    revision: str | None = Field(None, description="hub revision (branch, tag or commit) of a hub model id")
    arch: Literal["llama", "gpt2"] = "llama"
    hidden_size: int = Field(256, ge=8, le=65536)
    num_layers: int = Field(4, ge=1, le=512)
    num_heads: int = Field(4, ge=1, le=1024)
    num_kv_heads: int | None = Field(None, ge=1, le=1024, description="grouped-query attention; default = num_heads")
    intermediate_size: int | None = Field(None, ge=8, description="MLP width; default 4x (gpt2) or ~2.7x (llama)")
    vocab_size: int = Field(8000, ge=64, le=1_000_000)
    max_seq_len: int = Field(512, ge=8, le=1_048_576)
    params_b: float | None = Field(None, gt=0, description="parameter count in billions, when known (for estimates)")
    tie_embeddings: bool = False

    @model_validator(mode="after")
    def _heads_divide(self) -> "ModelSpec":
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if self.num_kv_heads and self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads {self.num_heads} is not divisible by num_kv_heads {self.num_kv_heads}")
        return self

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def ffn_size(self) -> int:
        if self.intermediate_size:
            return self.intermediate_size
        if self.arch == "gpt2":
            return 4 * self.hidden_size
        return ((8 * self.hidden_size // 3) + 63) // 64 * 64


class DatasetSpec(_Strict):
    """How local files or a hub data set become token shards (text, prompt/response or chat)."""

    format: Literal["auto", "text", "jsonl", "json", "parquet", "arrow", "hub"] = Field(
        "auto", description="auto: from the file names; hub: ``data`` is a hub data set id")
    style: Literal["text", "prompt_response", "chat"] = Field(
        "text", description="text: plain documents; prompt_response / chat: loss on the responses only")
    text_field: str = Field("text", min_length=1, description="field holding the text")
    prompt_field: str = Field("prompt", min_length=1)
    response_field: str = Field("response", min_length=1)
    messages_field: str = Field("messages", min_length=1, description="chat: list of {role, content}")
    chat_template: str | None = Field(None, description="Jinja chat template; default: the tokenizer's own")
    split: str = Field("train", min_length=1, description="split of a hub data set")
    config_name: str | None = Field(None, description="configuration of a hub data set")
    revision: str | None = None
    streaming: bool = Field(True, description="read the source as a stream (never whole in memory)")
    tokenizer: str | None = Field(None, description="tokenizer directory or hub id; default: the model's")
    vocab_size: int = Field(4000, ge=64, le=1_000_000, description="size of a tokenizer trained for pre-training")
    add_bos: bool = Field(True, description="start each document with BOS (when the tokenizer has one)")
    packing: bool = Field(True, description="several examples per row; never across a document boundary")
    validation_fraction: float = Field(0.05, gt=0, lt=0.5)
    dedupe: bool = True
    min_chars: int = Field(16, ge=0, description="drop documents shorter than this")
    max_documents: int | None = Field(None, ge=1)
    shard_tokens: int = Field(1 << 24, ge=1024, description="tokens per memory-mapped shard file")
    cache_dir: str | None = Field(None, description="where the shards go; default: output/data")
    seed: int = 0


class TrainingSpec(_Strict):
    """Optimiser, batch, precision, ZeRO and checkpoint settings of a training run."""

    steps: int = Field(100, ge=1, le=10_000_000, description="optimizer steps")
    micro_batch_size: int = Field(8, ge=1, le=65536)
    grad_accum: int = Field(1, ge=1, le=4096)
    seq_len: int = Field(128, ge=8, le=1_048_576)
    lr: float = Field(3e-4, gt=0, le=10)
    weight_decay: float = Field(0.0, ge=0, le=1)
    warmup_steps: int = Field(0, ge=0)
    zero_stage: Literal[0, 1, 2, 3] = 2
    offload_optimizer: bool = False
    precision: Precision = "auto"
    activation_checkpointing: bool = False
    attention: Literal["sdpa", "flash_attention_2", "eager"] = Field(
        "sdpa", description="attention kernel; sdpa/flash keep no attention matrix for the backward pass")
    checkpoint_every: int = Field(50, ge=1, description="steps between checkpoints")
    keep_checkpoints: int = Field(2, ge=1)
    eval_every: int = Field(0, ge=0, description="steps between validation runs; 0 = only at the end")
    eval_batches: int = Field(8, ge=1)
    log_every: int = Field(1, ge=1)
    seed: int = 0
    max_grad_norm: float = Field(1.0, ge=0)


class AdapterSpec(_Strict):
    """PEFT settings; each method reads the fields it needs."""

    r: int = Field(8, ge=1, le=4096, description="LoRA rank")
    alpha: int = Field(16, ge=1)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] | None = Field(None, description="default: the attention projections")
    num_virtual_tokens: int = Field(8, ge=1, le=1024, description="prefix / prompt / p-tuning")
    encoder_hidden_size: int = Field(64, ge=8, description="prefix reparameterisation / p-tuning encoder width")
    bottleneck: Literal["pfeiffer", "houlsby"] = Field(
        "pfeiffer", description="bottleneck adapters after the MLP (pfeiffer) or after attention and MLP (houlsby)")
    reduction_factor: int = Field(16, ge=1, le=4096, description="bottleneck width = hidden_size / this")
    merge: bool = Field(False, description="write a merged model instead of the adapter (LoRA/IA3)")


class ServedAdapter(_Strict):
    """A LoRA adapter vLLM serves next to the base model, asked for by ``name`` in requests."""

    name: str = Field(..., min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    path: str = Field(..., min_length=1, description="a fine-tune job's output (or its adapter directory)")
