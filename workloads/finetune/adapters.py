"""PEFT configs for each fine-tuning method (lora, qlora, prefix, prompt, p_tuning, p_tuning_v2, ia3)."""

from __future__ import annotations

from typing import Any

from workloads.training.runtime import WorkloadError

ATTENTION_TARGETS = {"llama": ["q_proj", "v_proj"], "gpt2": ["c_attn"]}
IA3_TARGETS = {"llama": (["k_proj", "v_proj", "down_proj"], ["down_proj"]), "gpt2": (["c_attn", "mlp.c_proj"], ["mlp.c_proj"])}


def _family(model: Any) -> str:
    return "gpt2" if getattr(model.config, "model_type", "") == "gpt2" else "llama"


def peft_config(method: str, a: Any, model: Any) -> Any:
    """The peft config of ``method`` with adapter settings ``a`` for ``model``."""
    import peft

    fam = _family(model)
    task = peft.TaskType.CAUSAL_LM
    if method in ("lora", "qlora"):
        return peft.LoraConfig(task_type=task, r=a.r, lora_alpha=a.alpha, lora_dropout=a.dropout,
                               target_modules=a.target_modules or ATTENTION_TARGETS[fam],
                               fan_in_fan_out=fam == "gpt2")
    if method == "ia3":
        targets, ff = IA3_TARGETS[fam]
        return peft.IA3Config(task_type=task, target_modules=a.target_modules or targets,
                              feedforward_modules=[m for m in ff if m in (a.target_modules or targets)],
                              fan_in_fan_out=fam == "gpt2")
    if method == "prefix":
        return peft.PrefixTuningConfig(task_type=task, num_virtual_tokens=a.num_virtual_tokens)
    if method == "p_tuning_v2":  # deep prompt tuning: prefixes at every layer through a reparameterisation MLP
        return peft.PrefixTuningConfig(task_type=task, num_virtual_tokens=a.num_virtual_tokens,
                                       prefix_projection=True, encoder_hidden_size=a.encoder_hidden_size)
    if method == "prompt":
        return peft.PromptTuningConfig(task_type=task, num_virtual_tokens=a.num_virtual_tokens)
    if method == "p_tuning":
        return peft.PromptEncoderConfig(task_type=task, num_virtual_tokens=a.num_virtual_tokens,
                                        encoder_hidden_size=a.encoder_hidden_size)
    raise WorkloadError(f"method: unknown fine-tuning method {method!r}")


def check_qlora_supported(device_type: str) -> None:
    """QLoRA needs an NVIDIA GPU and bitsandbytes; say so clearly otherwise."""
    if device_type != "cuda":
        raise WorkloadError("method qlora needs an NVIDIA GPU (4-bit weights through bitsandbytes); "
                            "this process sees no GPU. Use method lora on CPU.")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise WorkloadError("method qlora needs the bitsandbytes package on the node "
                            "(pip install bitsandbytes)") from None


def load_base(path: str, method: str, device_type: str, precision: str) -> Any:
    """The base model from a local directory (4-bit NF4 for qlora)."""
    import os

    import torch
    from transformers import AutoModelForCausalLM

    if not os.path.isfile(os.path.join(path, "config.json")):
        raise WorkloadError(f"base_model: {path} is not a local model directory (no config.json)")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)
    import transformers

    version = tuple(int(x) for x in transformers.__version__.split(".")[:2] if x.isdigit())
    dtype_key = "dtype" if version >= (4, 56) else "torch_dtype"  # older releases (e.g. on a GPU box)
    kwargs: dict[str, Any] = {"local_files_only": True, dtype_key: dtype}
    if method == "qlora":
        check_qlora_supported(device_type)
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype if dtype != torch.float32 else torch.bfloat16)
        kwargs["device_map"] = {"": torch.cuda.current_device()}
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    model.config.use_cache = False
    return model


def apply_method(model: Any, method: str, a: Any, checkpointing: bool) -> Any:
    """Freeze the base and attach the adapter (full: everything trains)."""
    if method == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        if checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        return model
    import peft

    if method == "qlora":
        model = peft.prepare_model_for_kbit_training(model, use_gradient_checkpointing=checkpointing)
    elif checkpointing and method in ("lora", "ia3"):
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    return peft.get_peft_model(model, peft_config(method, a, model))


def count(model: Any) -> tuple[int, int]:
    """(trainable, total) parameters."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())
