"""The estimator's figures for 1.1B, 7B and 70B llama models (full ZeRO-2/3, LoRA, QLoRA, serving), as
docs/workloads.md shows them. Pure arithmetic; prints a markdown table, then one JSON line.
    .venv/bin/python benchmarks/workloads_estimates.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from workloads.estimate import GIB, estimate_inference, estimate_training, suggest  # noqa: E402
from workloads.spec_parts import ModelSpec, TrainingSpec  # noqa: E402

MODELS = {
    "TinyLlama-1.1B": ModelSpec(hidden_size=2048, num_layers=22, num_heads=32, num_kv_heads=4, intermediate_size=5632,
                                vocab_size=32000, max_seq_len=2048),
    "Llama-2-7B": ModelSpec(hidden_size=4096, num_layers=32, num_heads=32, intermediate_size=11008, vocab_size=32000,
                            max_seq_len=4096),
    "Llama-2-70B": ModelSpec(hidden_size=8192, num_layers=80, num_heads=64, num_kv_heads=8, intermediate_size=28672,
                             vocab_size=32000, max_seq_len=4096),
}
# seq 2048, micro-batch 1, activation checkpointing, bf16: a common fine-tuning setting
T = TrainingSpec(micro_batch_size=1, seq_len=2048, activation_checkpointing=True, precision="bf16")


def rows() -> list[dict]:
    out = []
    for name, m in MODELS.items():
        for label, method, stage in (("full, ZeRO-2", "full", 2), ("full, ZeRO-3", "full", 3), ("LoRA r=8", "lora", 0),
                                     ("LoRA r=8, ZeRO-3", "lora", 3), ("QLoRA r=8", "qlora", 0)):
            t = T.model_copy(update={"zero_stage": stage})
            try:
                est = suggest(lambda n, t=t, method=method: estimate_training(m, t, method=method, world_size=n))
                gpus = int(est.gpu) * est.nodes if est.gpu >= 1 else est.gpu
                out.append({"model": name, "case": label, "gib_per_gpu": round(est.per_gpu_bytes / GIB, 1),
                            "gpus": gpus})
            except ValueError:
                one = estimate_training(m, t, method=method, world_size=64)
                out.append({"model": name, "case": label, "gib_per_gpu": round(one.per_gpu_bytes / GIB, 1),
                            "gpus": "does not fit 64 x 80 GB"})
        for label, q in (("serve bf16", None), ("serve AWQ", "awq")):
            est = estimate_inference(m, quantization=q, max_model_len=4096, max_num_seqs=16)
            out.append({"model": name, "case": label, "gib_per_gpu": round(est.per_gpu_bytes / GIB, 1),
                        "gpus": "weights " + str(round(est.parts["weights"] / 1e9, 2)) + " GB"})
    return out


def main() -> None:
    table = rows()
    print("| model | case | GiB per GPU | suggested GPUs (H100-80GB) |")
    print("| --- | --- | --- | --- |")
    for r in table:
        print(f"| {r['model']} | {r['case']} | {r['gib_per_gpu']} | {r['gpus']} |")
    print(json.dumps({"benchmark": "workloads_estimates", "rows": table}))


if __name__ == "__main__":
    main()
