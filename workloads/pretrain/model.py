"""A llama- or gpt2-style causal LM built with transformers from a ModelSpec."""

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


def build_model(m: Any, tokenizer: Any, seed: int = 0) -> Any:
    """A freshly initialised model (deterministic for a seed)."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(build_config(m, tokenizer))
