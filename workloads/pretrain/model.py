"""Causal LMs: a llama- or gpt2-style model built from a ModelSpec, or a pretrained one loaded from disk."""

from __future__ import annotations

from typing import Any


def build_config(m: Any, tokenizer: Any) -> Any:
    """transformers config of ``m`` sized to ``tokenizer``'s vocabulary."""
    vocab = len(tokenizer)
    ids = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
           "pad_token_id": tokenizer.pad_token_id}
    if m.arch == "gpt2":
        from transformers import GPT2Config

        return GPT2Config(vocab_size=vocab, n_embd=m.hidden_size, n_layer=m.num_layers, n_head=m.num_heads,
                          n_inner=m.ffn_size, n_positions=m.max_seq_len, use_cache=False, **ids)
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=vocab, hidden_size=m.hidden_size, intermediate_size=m.ffn_size,
                       num_hidden_layers=m.num_layers, num_attention_heads=m.num_heads,
                       num_key_value_heads=m.num_kv_heads or m.num_heads, max_position_embeddings=m.max_seq_len,
                       tie_word_embeddings=m.tie_embeddings, use_cache=False, **ids)


def attention_kernel(requested: str, device_type: str) -> str:
    """transformers' attention implementation: flash attention needs a GPU; SDPA elsewhere."""
    return "sdpa" if requested == "flash_attention_2" and device_type != "cuda" else requested


def build_model(m: Any, tokenizer: Any, seed: int = 0, attention: str = "sdpa") -> Any:
    """A freshly initialised model (deterministic for a seed)."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(build_config(m, tokenizer), attn_implementation=attention)


def torch_dtype(precision: str) -> Any:
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)


def load_pretrained(path: str, precision: str = "fp32", attention: str = "sdpa", **kwargs: Any) -> Any:
    """A causal LM from a local directory (already fetched from the hub if it was an id)."""
    import transformers
    from transformers import AutoModelForCausalLM

    version = tuple(int(x) for x in transformers.__version__.split(".")[:2] if x.isdigit())
    dtype_key = "dtype" if version >= (4, 56) else "torch_dtype"  # older releases (e.g. on a GPU box)
    dtype = "auto" if precision == "auto" else torch_dtype(precision)  # auto: as the checkpoint was saved
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, attn_implementation=attention,
                                                 **{dtype_key: dtype}, **kwargs)
    model.config.use_cache = False
    return model
