"""Entry point: ``python -m workloads.finetune --spec-json '{...}'``; writes an adapter or a full model."""

from __future__ import annotations

import json
import os
from typing import Any

from workloads.paths import resolve_spec_paths
from workloads.training.runtime import WorkloadError, read_spec_json, run_main, setup


def main(argv: list[str]) -> int:
    from workloads.specs import FinetuneSpec

    spec = resolve_spec_paths(FinetuneSpec.model_validate(read_spec_json(argv)))
    _, result = run(spec)
    return result["exit_code"]


def run(spec: Any) -> tuple[Any, dict[str, Any]]:
    """Fine-tune per ``spec``; returns (the trained module, the loop's figures) and saves the result."""
    t = spec.training
    rt = setup(t.precision, spec.output)
    for note in rt.notes:
        rt.log(note)
    from workloads.data.pipeline import load_data
    from workloads.finetune.adapters import apply_method, check_qlora_supported, count, load_base
    from workloads.training.engine import build_engine, init_distributed
    from workloads.training.loop import train

    if spec.method == "qlora":
        check_qlora_supported(rt.device.type)
    init_distributed(rt)
    try:
        tok, train_blocks, val_blocks, stats = load_data(spec.data, spec.dataset, t.seq_len, rt.output_dir,
                                                         rt.is_main, fallback_tokenizer=spec.base_model)
    except (ValueError, OSError) as exc:
        raise WorkloadError(str(exc)) from None
    import torch

    torch.manual_seed(t.seed)
    model = apply_method(load_base(spec.base_model, spec.method, rt.device.type, rt.precision), spec.method,
                         spec.adapter, t.activation_checkpointing)
    trainable, total = count(model)
    rt.log(f"data {json.dumps(stats)}; method {spec.method}: {trainable} of {total} parameters train")
    engine = build_engine(model, t, rt)
    result = train(engine, t, rt, train_blocks, val_blocks, extra_state={"method": spec.method})
    result.update(trainable_params=trainable, total_params=total)
    if not result["stopped"]:
        save_result(engine, spec, tok, rt)
    return engine.module, result


def save_result(engine: Any, spec: Any, tok: Any, rt: Any) -> None:
    """Write ``output/adapter`` (PEFT), or ``output/model`` (full fine-tune or a merged adapter)."""
    state = engine._zero3_consolidated_16bit_state_dict() if engine.zero_optimization_stage() == 3 else None
    if not rt.is_main:
        return
    module = engine.module
    if spec.method == "full":
        out = os.path.join(rt.output_dir, "model")
        module.config.use_cache = True
        module.save_pretrained(out, state_dict=state, safe_serialization=True)
    elif spec.adapter.merge:
        out = os.path.join(rt.output_dir, "model")
        merged = module.merge_and_unload()
        merged.config.use_cache = True
        merged.save_pretrained(out, safe_serialization=True)
    else:
        out = os.path.join(rt.output_dir, "adapter")
        module.save_pretrained(out)
    tok.save_pretrained(out)
    rt.log(f"{spec.method} result saved to {out}")


if __name__ == "__main__":
    run_main(main)
