"""Entry point: ``python -m workloads.pretrain --spec-json '{...}'`` (spec from argv, slice from env)."""

from __future__ import annotations

import json
import os
from typing import Any

from workloads.paths import resolve_spec_paths
from workloads.training.runtime import WorkloadError, read_spec_json, run_main, setup


def main(argv: list[str]) -> int:
    from workloads.specs import PretrainSpec

    spec = resolve_spec_paths(PretrainSpec.model_validate(read_spec_json(argv)))
    t = spec.training
    rt = setup(t.precision, spec.output)
    for note in rt.notes:
        rt.log(note)
    from workloads.data.pipeline import load_data
    from workloads.pretrain.model import build_model
    from workloads.training.engine import build_engine, init_distributed
    from workloads.training.loop import train

    init_distributed(rt)
    try:
        tok, train_blocks, val_blocks, stats = load_data(spec.data, spec.dataset, t.seq_len, rt.output_dir, rt.is_main)
    except (ValueError, OSError) as exc:
        raise WorkloadError(str(exc)) from None
    rt.log(f"data {json.dumps(stats)}; precision {rt.precision}; world {rt.world_size}; device {rt.device}")
    model = build_model(spec.model, tok, seed=t.seed)
    if t.activation_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    rt.log(f"model {spec.model.arch}: {sum(p.numel() for p in model.parameters())} parameters")
    engine = build_engine(model, t, rt)
    result = train(engine, t, rt, train_blocks, val_blocks)
    if result["stopped"]:
        return result["exit_code"]
    save_final(engine, spec.model, tok, rt)
    return 0


def save_final(engine: Any, m: Any, tok: Any, rt: Any) -> None:
    """Write the trained model + tokenizer to ``output/model`` (gathering ZeRO-3 shards first)."""
    out = os.path.join(rt.output_dir, "model")
    state = engine._zero3_consolidated_16bit_state_dict() if engine.zero_optimization_stage() == 3 else None
    if rt.is_main:
        module = engine.module
        module.config.use_cache = True
        module.save_pretrained(out, state_dict=state, safe_serialization=True)
        tok.save_pretrained(out)
        rt.log(f"model saved to {out}")


if __name__ == "__main__":
    run_main(main)
