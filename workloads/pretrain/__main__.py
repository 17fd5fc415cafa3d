"""Entry point: ``python -m workloads.pretrain`` (spec from GPUPOOL_SPEC_FILE, slice and rendezvous from env).

Pre-trains from scratch (a model built from ``model``) or continues from ``model.path`` (a local
directory or hub id), on one rank per GPU of every gang member.
"""

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
    from workloads.data.pipeline import load_splits, pretrain_tokenizer
    from workloads.hub import resolve_model
    from workloads.pretrain.model import attention_kernel, build_model, load_pretrained
    from workloads.training.engine import build_engine, init_distributed
    from workloads.training.loop import announce, train

    init_distributed(rt)
    announce(rt, spec.kind)
    where = {"cache": spec.hub_cache, "needs": spec.needs}
    try:
        model_dir = resolve_model(spec.model.path, "model.path", revision=spec.model.revision, **where) \
            if spec.model.path else None
        tok = pretrain_tokenizer(spec.data, spec.dataset, rt.output_dir, rt.is_main, model_dir=model_dir, **where)
        train_rows, val_rows, stats = load_splits(spec.data, spec.dataset, tok, t.seq_len, rt.output_dir,
                                                  rank=rt.rank, local_rank=rt.local_rank, layout="stream", **where)
    except (ValueError, OSError) as exc:
        raise WorkloadError(str(exc)) from None
    rt.log(f"data {json.dumps(stats)}; precision {rt.precision}; world {rt.world_size}; device {rt.device}")
    attention = attention_kernel(t.attention, rt.device.type)
    if model_dir:
        model = load_pretrained(model_dir, "fp32", attention)  # DeepSpeed casts to the run's precision
        rt.log(f"continuing from {spec.model.path} ({model_dir})")
    else:
        model = build_model(spec.model, tok, seed=t.seed, attention=attention)
    if t.activation_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    rt.log(f"model {model.config.model_type}: {sum(p.numel() for p in model.parameters())} parameters")
    engine = build_engine(model, t, rt)
    result = train(engine, t, rt, train_rows, val_rows)
    if result["stopped"]:
        return result["exit_code"]
    save_final(engine, tok, rt)
    return 0


def save_final(engine: Any, tok: Any, rt: Any) -> None:
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
    run_main(main, ranks_of="workloads.pretrain")
