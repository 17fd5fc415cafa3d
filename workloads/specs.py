"""Job specs users submit (YAML/JSON), validated with pydantic. Light imports only.

Kinds: pretrain, finetune, evaluate, inference, custom. Every spec shares name, queue,
priority, resources, retry, data/output locations and environment. The control plane
validates with these models and derives the scheduler's Request from ``resources``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationInfo, field_validator, model_validator

from workloads.spec_parts import AdapterSpec, DatasetSpec, FinetuneMethod, ModelSpec, ServedAdapter, TrainingSpec

PRIORITY_CLASSES = {"low": -100, "normal": 0, "high": 100, "critical": 1000}


class Resources(BaseModel):
    """What each member needs. ``gpu: 0.25`` is a quarter of one GPU; ``gpu: 2`` two whole ones."""

    model_config = ConfigDict(extra="forbid")

    gpu: float = Field(0, ge=0, le=64, description="fraction (<1) of one accelerator or whole count")
    gpu_memory_mib: int = Field(0, ge=0, description="slice memory for a fraction; 0 = proportional")
    cpu_milli: int = Field(1000, ge=0)
    memory_mib: int = Field(1024, ge=0)
    vendor: str | None = None
    models: list[str] = Field(default_factory=list, description="allowed accelerator models")
    min_gpu_memory_mib: int = Field(0, ge=0)
    labels: dict[str, str] = Field(default_factory=dict)
    nodes: int = Field(1, ge=1, le=1024, description="gang members, placed all-or-nothing")

    @field_validator("gpu")
    @classmethod
    def _whole_or_fraction(cls, v: float) -> float:
        if v > 1 and v != int(v):
            raise ValueError("must be a fraction below 1 or a whole number of GPUs")
        if 0 < v < 1 and round(v * 1000) < 1:
            raise ValueError("a fraction must be at least 0.001 GPU")
        return v


class RetryPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_attempts: int = Field(3, ge=1, le=100)
    on_lost: bool = True  # requeue when the node is lost
    on_failure: bool = False  # requeue when the process exits non-zero
    on_preemption: bool = True


class SpecBase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    queue: str = "default"
    priority: str | int = "normal"
    resources: Resources = Field(default_factory=Resources)
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    env: dict[str, str] = Field(default_factory=dict)
    data: str | None = Field(None, description="input path on the node or shared storage")
    output: str | None = Field(None, description="output path on the node or shared storage")
    workdir: str | None = None
    min_runtime_s: float = Field(0, ge=0, description="never preempted before this")
    max_runtime_s: float | None = Field(None, gt=0, le=366 * 86400, description="stopped when it runs longer "
                                        "(lets it backfill into room reserved for a later start)")
    preemptible: bool = True
    grace_s: float = Field(30, ge=0, le=3600, description="SIGTERM to SIGKILL")

    @field_validator("priority")
    @classmethod
    def _known_priority(cls, v: str | int) -> str | int:
        if isinstance(v, str) and v not in PRIORITY_CLASSES:
            raise ValueError(f"unknown priority class {v!r}; use one of {sorted(PRIORITY_CLASSES)} or an integer")
        return v

    @property
    def priority_value(self) -> int:
        return PRIORITY_CLASSES[self.priority] if isinstance(self.priority, str) else int(self.priority)


class CustomSpec(SpecBase):
    """Any command, run with the slice contract (docs/slice-contract.md)."""

    kind: Literal["custom"] = "custom"
    command: list[str] = Field(..., min_length=1)
    ports: int = Field(0, ge=0, le=8)
    readiness_path: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _split_string_command(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("command"), str):
            import shlex

            data = {**data, "command": shlex.split(data["command"])}
        return data


class _Packaged(SpecBase):
    """A packaged workload: when ``resources.gpu`` is omitted it is derived from the estimate.

    The estimate reads the model's config.json where the model is, so it runs in the CLI (or
    any caller on the model's machine); the server validates with ``estimate=False`` and then
    needs ``resources.gpu`` in the spec.
    """

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    hub_cache: str | None = Field(None, description="hub cache directory on the node; default HF_HUB_CACHE/HF_HOME")
    needs: str | None = Field(None, description="what must run first (said in the job's error when an input is missing)")

    @model_validator(mode="after")
    def _derive_resources(self, info: ValidationInfo) -> "_Packaged":
        self._check()
        explicit = "resources" in self.model_fields_set
        if not explicit or "gpu" not in self.resources.model_fields_set:
            if not (info.context or {}).get("estimate", True):
                raise ValueError("resources.gpu: give resources (gpu, and nodes for a gang), or submit with the "
                                 "gpupool CLI, which estimates them where the model is")
            from workloads.estimate import suggest_resources

            derived = Resources(**suggest_resources(self))
            if explicit:  # fields the user gave (cpu, memory, constraints...) win over the estimate
                given = self.resources
                derived = derived.model_copy(update={k: getattr(given, k) for k in given.model_fields_set})
            self.resources = derived
        self._check_resources()
        return self

    def _check(self) -> None:
        """Cross-field checks of each kind (raise ValueError naming the field)."""

    def _check_resources(self) -> None:
        """Checks that need the final resources."""

    @property
    def granted_gpus(self) -> int:
        """Accelerators of the whole job: a fraction counts as one per member."""
        r = self.resources
        return (int(r.gpu) if r.gpu >= 1 else 1) * r.nodes


class PretrainSpec(_Packaged):
    """Pre-train a causal LM built from ``model`` on local text/jsonl at ``data``."""

    kind: Literal["pretrain"] = "pretrain"
    model: ModelSpec = Field(default_factory=ModelSpec)
    dataset: DatasetSpec = Field(default_factory=DatasetSpec)
    training: TrainingSpec = Field(default_factory=TrainingSpec)

    def _check(self) -> None:
        if not self.data:
            raise ValueError("data: a pretrain job needs a local path (text, jsonl, parquet, arrow) or a hub data set id")
        if self.training.seq_len > self.model.max_seq_len:
            raise ValueError(
                f"training.seq_len {self.training.seq_len} exceeds model.max_seq_len {self.model.max_seq_len}"
            )


class FinetuneSpec(_Packaged):
    """Fine-tune a base model (a local directory, a pre-train job's output or a hub id) fully or with an adapter."""

    kind: Literal["finetune"] = "finetune"
    base_model: str = Field(..., min_length=1, description="model directory (e.g. a pretrain output) or hub id")
    method: FinetuneMethod = "lora"
    adapter: AdapterSpec = Field(default_factory=AdapterSpec)
    dataset: DatasetSpec = Field(default_factory=DatasetSpec)
    training: TrainingSpec = Field(default_factory=lambda: TrainingSpec(steps=50, lr=1e-3, zero_stage=0))
    model: ModelSpec | None = Field(None, description="architecture of the base model, for estimates only")

    def _check(self) -> None:
        if not self.data:
            raise ValueError("data: a finetune job needs a local path or a hub data set id")
        if self.adapter.merge and self.method not in ("lora", "ia3"):
            raise ValueError(f"adapter.merge: only lora and ia3 adapters can be merged, not {self.method}")
        if self.method == "qlora" and self.training.zero_stage == 3:
            raise ValueError("training.zero_stage: qlora's 4-bit weights cannot be partitioned by ZeRO-3; use 0-2")


class EvaluateSpec(_Packaged):
    """Perplexity on a validation split and optional generations for a prompt set."""

    kind: Literal["evaluate"] = "evaluate"
    model_path: str = Field(..., min_length=1, description="local model directory")
    adapter_path: str | None = Field(None, description="PEFT adapter directory applied on top")
    dataset: DatasetSpec = Field(default_factory=DatasetSpec)
    seq_len: int = Field(128, ge=8)
    batch_size: int = Field(8, ge=1)
    max_batches: int = Field(50, ge=1)
    prompts: list[str] = Field(default_factory=list)
    max_new_tokens: int = Field(32, ge=1, le=4096)
    model: ModelSpec | None = Field(None, description="architecture, for estimates only")

    def _check(self) -> None:
        if not self.data and not self.prompts:
            raise ValueError("data: give a validation text/jsonl path, prompts, or both")


class InferenceSpec(_Packaged):
    """Serve a model (and LoRA adapters) with vLLM's OpenAI-compatible server on the slice's port."""

    kind: Literal["inference"] = "inference"
    model_path: str = Field(..., min_length=1, description="model directory or hub id")
    adapters: list[ServedAdapter] = Field(default_factory=list, description="LoRA adapters served by name")
    max_lora_rank: int | None = Field(None, ge=1, le=512, description="default: the largest adapter's r")
    chat_template: str | None = Field(None, description="Jinja template (or a file); default: the tokenizer's")
    served_model_name: str | None = None
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    quantization: str | None = Field(None, description="awq, gptq, fp8, bitsandbytes, ...")
    kv_cache_dtype: Literal["auto", "fp8", "fp8_e4m3", "fp8_e5m2", "bfloat16", "float16"] = "auto"
    tensor_parallel_size: int = Field(1, ge=1, le=64)
    pipeline_parallel_size: int = Field(1, ge=1, le=64)
    max_model_len: int | None = Field(None, ge=16)
    max_num_seqs: int = Field(64, ge=1, le=4096)
    gpu_memory_utilization: float | None = Field(
        None, gt=0, le=1, description="default: the slice's memory share (GPUPOOL_MEMORY_FRACTION)"
    )
    skip_tokenizer_init: bool = False
    enforce_eager: bool | None = Field(None, description="default: CUDA graphs on GPUs, eager on CPU")
    extra_args: list[str] = Field(default_factory=list, description="more `vllm serve` flags")
    metrics_interval_s: float = Field(5.0, gt=0, le=3600)
    model: ModelSpec | None = Field(None, description="architecture, for estimates only")

    def _check(self) -> None:
        names = [a.name for a in self.adapters]
        if len(set(names)) != len(names) or (self.served_model_name or self.name) in names:
            raise ValueError("adapters: each adapter needs its own name, different from the served model's")

    def _check_resources(self) -> None:
        shards = self.tensor_parallel_size * self.pipeline_parallel_size
        if shards != self.granted_gpus:
            r = self.resources
            raise ValueError(
                f"tensor_parallel_size x pipeline_parallel_size = {self.tensor_parallel_size} x "
                f"{self.pipeline_parallel_size} = {shards}, but resources grant {self.granted_gpus} GPU(s) "
                f"(gpu {r.gpu:g} x nodes {r.nodes}); they must be equal")


JobSpec = Annotated[
    Union[CustomSpec, PretrainSpec, FinetuneSpec, EvaluateSpec, InferenceSpec], Field(discriminator="kind")
]
_ADAPTER: TypeAdapter[Any] = TypeAdapter(JobSpec)


def parse_job_spec(data: Any, *, estimate: bool = True) -> SpecBase:
    """Validate a spec mapping; raises pydantic.ValidationError naming the bad field.

    ``estimate=False`` never reads model files (the server's mode): a packaged spec must then
    carry ``resources.gpu``; with ``estimate=True`` a missing request is derived from the estimate.
    """
    if isinstance(data, dict) and "kind" not in data:
        data = {**data, "kind": "custom"}
    return _ADAPTER.validate_python(data, context={"estimate": estimate})
