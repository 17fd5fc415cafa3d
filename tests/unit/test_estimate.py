"""Memory estimates against published figures (ZeRO paper, DeepSpeed's estimators, PEFT README, QLoRA,
TinyLlama, AWQ checkpoints); docs/workloads.md lists them next to ours."""

from __future__ import annotations

import pytest

from workloads.estimate import (
    GIB,
    count_params,
    estimate_inference,
    estimate_training,
    model_states_bytes,
    suggest,
    suggest_resources,
)
from workloads.spec_parts import ModelSpec, TrainingSpec

GB = 1e9


def _within(value: float, published: float, tol: float) -> None:
    assert abs(value - published) / published <= tol, f"{value:.2f} vs published {published:.2f} (tolerance {tol:.0%})"


@pytest.mark.parametrize(("stage", "published_gb", "tol"), [(1, 31.4, 0.02), (2, 16.6, 0.05), (3, 1.9, 0.25)])
def test_zero_paper_figure_1_model_states(stage: int, published_gb: float, tol: float) -> None:
    """ZeRO paper Fig. 1: 7.5B params, 64 GPUs, K=12: 31.4 / 16.6 / 1.9 GB per GPU for stages 1-3.

    DeepSpeed also keeps 32-bit gradient partitions (16 or 18 bytes/param partitioned where the
    paper counts 12, 14 and 16), hence the wider tolerances.
    """
    got = model_states_bytes(int(7.5e9), zero_stage=stage, world_size=64, precision="bf16",
                             largest_layer=50_000_000) / GB
    _within(got, published_gb, tol)


def test_stage_0_mixed_precision_costs_20_bytes_per_parameter() -> None:
    """The paper's stage-0 baseline is 16Ψ (120 GB for 7.5B); DeepSpeed's bf16/fp16 optimizers also
    keep fp32 gradients of the flat groups, so a real stage-0 run needs 20Ψ."""
    got = model_states_bytes(int(7.5e9), zero_stage=0, world_size=64, precision="bf16")
    assert got == 20 * int(7.5e9) and got / GB == pytest.approx(120.0 * 1.25)
    assert model_states_bytes(1000, zero_stage=0, world_size=1, precision="fp32") == 16 * 1000


# PEFT README ("Use cases" table; A100 80GB; GB as reported, batch and activations included)
PEFT_MODELS = {
    "T0_3B": ModelSpec(params_b=2.85, hidden_size=2048, num_layers=48, num_heads=32, vocab_size=32128),
    "bloomz-7b1": ModelSpec(params_b=7.07, hidden_size=4096, num_layers=30, num_heads=32, vocab_size=250880),
    "mt0-xxl": ModelSpec(params_b=12.9, hidden_size=4096, num_layers=48, num_heads=64, vocab_size=250112),
}


@pytest.mark.parametrize(("model", "method", "published_gb"), [
    ("T0_3B", "full", 47.14), ("T0_3B", "lora", 14.4), ("bloomz-7b1", "lora", 32.0), ("mt0-xxl", "lora", 56.0)])
def test_peft_readme_figures(model: str, method: str, published_gb: float) -> None:
    t = TrainingSpec(micro_batch_size=8, seq_len=64, zero_stage=0, precision="fp32")
    est = estimate_training(PEFT_MODELS[model], t, method=method, precision="fp32")
    _within(est.per_gpu_bytes / GB, published_gb, 0.15)
    if method == "lora":
        assert est.trainable_params < est.params / 100


def test_peft_readme_bloomz_7b1_full_finetune_is_out_of_memory_on_80gb() -> None:
    t = TrainingSpec(micro_batch_size=8, seq_len=64, zero_stage=0, precision="fp32")
    full = estimate_training(PEFT_MODELS["bloomz-7b1"], t, method="full", precision="fp32")
    assert full.per_gpu_bytes / GB > 80


TINYLLAMA = ModelSpec(hidden_size=2048, num_layers=22, num_heads=32, num_kv_heads=4, intermediate_size=5632,
                      vocab_size=32000, max_seq_len=2048)
LLAMA2_7B = ModelSpec(hidden_size=4096, num_layers=32, num_heads=32, intermediate_size=11008, vocab_size=32000,
                      max_seq_len=4096)
LLAMA2_70B = ModelSpec(hidden_size=8192, num_layers=80, num_heads=64, num_kv_heads=8, intermediate_size=28672,
                       vocab_size=32000, max_seq_len=4096)


def test_parameter_counts_of_the_reference_models() -> None:
    """TinyLlama 1.1B (1,100,048,384), Llama-2-7b (6,738,415,616), Llama-2-70b (68,976,648,192)."""
    assert count_params(TINYLLAMA) == 1_100_048_384
    assert count_params(LLAMA2_7B) == 6_738_415_616
    assert count_params(LLAMA2_70B) == 68_976_648_192


def test_tinyllama_16k_tokens_per_gpu_fit_a_40gb_a100() -> None:
    """TinyLlama README: the 1.1B model trains with 16k tokens per GPU (micro-batch 8 x 2048) in 40 GB
    (sharded over 16 A100-40G, flash attention). The s² attention term would have asked for ~138 GiB
    of activations alone; without it they are ~30 GiB."""
    t = TrainingSpec(micro_batch_size=8, seq_len=2048, zero_stage=3, precision="bf16")
    est = estimate_training(TINYLLAMA, t, world_size=16)
    assert 25 * GIB < est.parts["activations"] < 35 * GIB
    assert 30 < est.per_gpu_bytes / GB <= 40
    eager = estimate_training(TINYLLAMA, t.model_copy(update={"attention": "eager"}), world_size=16)
    assert eager.parts["activations"] > 3 * est.parts["activations"]


@pytest.mark.parametrize(("model", "published_gb"), [(LLAMA2_7B, 3.89), (LLAMA2_70B, 36.61)])
def test_awq_weights_match_published_checkpoints(model: ModelSpec, published_gb: float) -> None:
    """TheBloke/Llama-2-{7B,70B}-AWQ: 3.89 / 36.61 GB of safetensors (4-bit, group 128, embeddings
    and lm_head in 16 bit)."""
    _within(estimate_inference(model, quantization="awq").parts["weights"] / GB, published_gb, 0.05)


def test_qlora_keeps_embeddings_and_lm_head_in_16_bit() -> None:
    t = TrainingSpec(micro_batch_size=1, seq_len=512, precision="bf16", zero_stage=0)
    q = estimate_training(LLAMA2_7B, t, method="qlora").parts["frozen_weights"]
    emb = 2 * 32000 * 4096
    assert q == int((count_params(LLAMA2_7B) - emb) * 4.127 / 8) + emb * 2


def test_overheads_count_cuda_context_nccl_and_deepspeed_buckets() -> None:
    t = TrainingSpec(micro_batch_size=1, seq_len=512, zero_stage=2)
    one, eight = estimate_training(LLAMA2_7B, t, world_size=1), estimate_training(LLAMA2_7B, t, world_size=8)
    assert "nccl" not in one.parts and eight.parts["nccl"] > 0 and one.parts["cuda_context"] > 0
    assert one.parts["deepspeed_buckets"] == 500_000_000 * 2  # DeepSpeed's default reduce bucket, 16-bit
    z0 = estimate_training(LLAMA2_7B, t.model_copy(update={"zero_stage": 0}))
    assert z0.parts["deepspeed_buckets"] == 0


def test_estimator_world_size_is_every_gpu_of_the_request() -> None:
    """Suggested requests are 1-8 GPUs on one node or whole nodes of 8, so the world the estimate
    assumed is the world the job runs (one rank per GPU)."""
    t = TrainingSpec(micro_batch_size=1, seq_len=2048, zero_stage=3, activation_checkpointing=True)
    est = suggest(lambda n: estimate_training(LLAMA2_70B, t, world_size=n))
    assert est.world_size == int(est.gpu) * est.nodes
    assert est.nodes > 1 and est.gpu == 8


def test_qlora_paper_65b_fits_in_48gb() -> None:
    """QLoRA paper: a 65B model fine-tunes on one 48 GB GPU (vs > 780 GB for 16-bit full fine-tuning)."""
    m = ModelSpec(params_b=65.2, hidden_size=8192, num_layers=80, num_heads=64, vocab_size=32000)
    t = TrainingSpec(micro_batch_size=1, seq_len=512, activation_checkpointing=True, precision="bf16", zero_stage=0)
    q = estimate_training(m, t, method="qlora").per_gpu_bytes / GB
    assert 33 < q < 48
    full = estimate_training(m, t, method="full").per_gpu_bytes / GB
    assert full > 780


def test_matches_deepspeed_estimators() -> None:
    """Our stage-2/3 model states equal DeepSpeed's own estimate_zero2/3_model_states_mem_needs."""
    stage2 = pytest.importorskip("deepspeed.runtime.zero.stage_1_and_2")
    stage3 = pytest.importorskip("deepspeed.runtime.zero.stage3")
    total, largest = 2_851_000_000, 32_900_000  # bigscience/T0_3B, DeepSpeed's memory docs example
    for gpus in (1, 4, 8):
        _, ds2 = stage2.estimate_zero2_model_states_mem_needs(total, num_gpus_per_node=gpus, cpu_offload=False)
        assert model_states_bytes(total, zero_stage=2, world_size=gpus) == ds2
        _, ds3, _ = stage3.estimate_zero3_model_states_mem_needs(total, largest, num_gpus_per_node=gpus,
                                                                 cpu_offload=False)
        assert model_states_bytes(total, zero_stage=3, world_size=gpus, largest_layer=largest) == ds3
        _, ds2_off = stage2.estimate_zero2_model_states_mem_needs(total, num_gpus_per_node=gpus, cpu_offload=True)
        assert model_states_bytes(total, zero_stage=2, world_size=gpus, offload_optimizer=True) == ds2_off


def test_param_count_of_built_model_matches_transformers() -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    m = ModelSpec(hidden_size=64, num_layers=3, num_heads=4, num_kv_heads=2, vocab_size=500, max_seq_len=64)
    llama = LlamaForCausalLM(LlamaConfig(vocab_size=500, hidden_size=64, intermediate_size=m.ffn_size,
                                         num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
                                         max_position_embeddings=64, tie_word_embeddings=False))
    assert count_params(m) == sum(p.numel() for p in llama.parameters())
    g = ModelSpec(arch="gpt2", hidden_size=64, num_layers=2, num_heads=4, vocab_size=500, max_seq_len=64)
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=500, n_embd=64, n_layer=2, n_head=4, n_positions=64))
    assert count_params(g) == sum(p.numel() for p in gpt2.parameters())
    del torch


def test_suggestion_fraction_then_whole_gpus() -> None:
    tiny = ModelSpec(hidden_size=128, num_layers=2, num_heads=2, vocab_size=1000)
    est = suggest(lambda n: estimate_training(tiny, TrainingSpec(), world_size=n))
    assert 0 < est.gpu < 1 and est.gpu_memory_mib >= est.per_gpu_mib
    big = ModelSpec(params_b=13, hidden_size=5120, num_layers=40, num_heads=40, vocab_size=32000, max_seq_len=4096)
    t = TrainingSpec(zero_stage=3, micro_batch_size=1, seq_len=2048, activation_checkpointing=True)
    est = suggest(lambda n: estimate_training(big, t, world_size=n))
    assert est.gpu >= 2 and est.gpu == int(est.gpu)
    assert est.per_gpu_mib <= 81559


def test_suggested_resources_are_plain_fields() -> None:
    from workloads.specs import parse_job_spec

    spec = parse_job_spec({"kind": "pretrain", "name": "p", "data": "/d"})
    assert suggest_resources(spec) == {"gpu": spec.resources.gpu, "gpu_memory_mib": spec.resources.gpu_memory_mib,
                                       "nodes": 1}


def test_inference_kv_and_quantization_shrink_memory() -> None:
    m = ModelSpec(params_b=7, hidden_size=4096, num_layers=32, num_heads=32, vocab_size=32000, max_seq_len=4096)
    fp16 = estimate_inference(m)
    awq = estimate_inference(m, quantization="awq")
    assert "nccl" not in fp16.parts and estimate_inference(m, tensor_parallel_size=2).parts["nccl"] > 0
    fp8kv = estimate_inference(m, kv_cache_dtype="fp8")
    tp2 = estimate_inference(m, tensor_parallel_size=2)
    _within(fp16.parts["weights"] / GB, 14.0, 0.01)  # 7B x 2 bytes
    assert awq.parts["weights"] < fp16.parts["weights"] / 3
    assert fp8kv.parts["kv_cache"] * 2 == fp16.parts["kv_cache"]
    assert tp2.parts["weights"] * 2 == fp16.parts["weights"]
    # llama-2-7b: 0.5 MiB of fp16 KV cache per token (2 x 32 layers x 4096 x 2 bytes)
    assert fp16.parts["kv_cache"] == 2 * 32 * 4096 * 2 * 4096 * 16
