"""The model of each fine-tuning method: PEFT configs (lora, qlora, prefix, prompt, p_tuning,
p_tuning_v2, ia3), bottleneck adapters, or the whole model (full)."""

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
    if method == "prefix":  # Li & Liang 2021: every layer's prefix, trained through an MLP reparameterisation
        return peft.PrefixTuningConfig(task_type=task, num_virtual_tokens=a.num_virtual_tokens,
                                       prefix_projection=True, encoder_hidden_size=a.encoder_hidden_size)
    if method == "p_tuning_v2":  # Liu et al. 2022: deep prompt tuning, prefixes at every layer, no reparameterisation
        return peft.PrefixTuningConfig(task_type=task, num_virtual_tokens=a.num_virtual_tokens,
                                       prefix_projection=False)
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


def load_base(path: str, method: str, device_type: str, precision: str, attention: str = "sdpa") -> Any:
    """The base model from a local directory (4-bit NF4 for qlora, on this rank's GPU)."""
    from workloads.pretrain.model import load_pretrained, torch_dtype

    if method != "qlora":
        return load_pretrained(path, "fp32" if method == "full" else precision, attention)
    import torch
    from transformers import BitsAndBytesConfig

    check_qlora_supported(device_type)
    dtype = torch_dtype(precision)
    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=dtype if dtype != torch.float32 else torch.bfloat16)
    return load_pretrained(path, precision, attention, quantization_config=quant,
                           device_map={"": torch.cuda.current_device()})


def apply_method(model: Any, method: str, a: Any, checkpointing: bool) -> tuple[Any, dict[str, Any] | None]:
    """Freeze the base and attach the adapter (full: everything trains); (model, bottleneck config)."""
    if method == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        if checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        return model, None
    if method == "bottleneck":
        from workloads.finetune.bottleneck import add_bottlenecks

        config = add_bottlenecks(model, a.bottleneck, a.reduction_factor)
        if checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            model.enable_input_require_grads()
        return model, config
    import peft

    if checkpointing and method in ("lora", "qlora", "ia3"):
        # (no prepare_model_for_kbit_training for qlora: it would up-cast embeddings and lm_head to fp32;
        # they stay 16-bit, as the estimate assumes)
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    return peft.get_peft_model(model, peft_config(method, a, model)), None


def count(model: Any) -> tuple[int, int]:
    """(trainable, total) parameters."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())
