"""Entry point: ``python -m workloads.finetune``; writes an adapter, a merged model or a full model.

Data: plain text, prompt/response or chat ``messages`` (loss on the responses), packed into rows
without splitting an example. The tokenizer is the base model's own (or ``dataset.tokenizer``,
checked against the model): a base model without one is an error, never a new tokenizer.
"""

from __future__ import annotations

import json
import os
from typing import Any

from workloads.paths import resolve_spec_paths
from workloads.spec_parts import PROMPT_METHODS
from workloads.training.runtime import WorkloadError, read_spec_json, run_main, setup


def main(argv: list[str]) -> int:
    from workloads.specs import FinetuneSpec

    spec = resolve_spec_paths(FinetuneSpec.model_validate(read_spec_json(argv)))
    _, result = run(spec)
    return result["exit_code"]


def layout_of(spec: Any) -> str:
    """Virtual-token methods take one example per row (PEFT drops position ids); else packed rows."""
    return "single" if spec.method in PROMPT_METHODS or not spec.dataset.packing else "packed"


def run(spec: Any) -> tuple[Any, dict[str, Any]]:
    """Fine-tune per ``spec``; returns (the trained module, the loop's figures) and saves the result."""
    t = spec.training
    rt = setup(t.precision, spec.output)
    for note in rt.notes:
        rt.log(note)
    from workloads.data.pipeline import load_splits
    from workloads.data.tokenizer import check_matches_model, load_tokenizer
    from workloads.finetune.adapters import apply_method, check_qlora_supported, count, load_base
    from workloads.hub import resolve_model
    from workloads.pretrain.model import attention_kernel
    from workloads.training.engine import build_engine, init_distributed
    from workloads.training.loop import announce, train

    if spec.method == "qlora":
        check_qlora_supported(rt.device.type)
    init_distributed(rt)
    announce(rt, spec.kind)
    where = {"cache": spec.hub_cache, "needs": spec.needs}
    try:
        base_dir = resolve_model(spec.base_model, "base_model", **where)
        what = "dataset.tokenizer" if spec.dataset.tokenizer else "base_model"
        tok = load_tokenizer(spec.dataset.tokenizer or base_dir, what, **where)
        check_matches_model(tok, base_dir, what)
        train_rows, val_rows, stats = load_splits(spec.data, spec.dataset, tok, t.seq_len, rt.output_dir,
                                                  rank=rt.rank, local_rank=rt.local_rank, layout=layout_of(spec),
                                                  **where)
    except (ValueError, OSError) as exc:
        raise WorkloadError(str(exc)) from None
    import torch

    torch.manual_seed(t.seed)
    base = load_base(base_dir, spec.method, rt.device.type, rt.precision, attention_kernel(t.attention, rt.device.type))
    model, bottleneck = apply_method(base, spec.method, spec.adapter, t.activation_checkpointing)
    trainable, total = count(model)
    rt.log(f"data {json.dumps(stats)}; method {spec.method}: {trainable} of {total} parameters train")
    engine = build_engine(model, t, rt)
    result = train(engine, t, rt, train_rows, val_rows, extra_state={"method": spec.method},
                   positions=spec.method not in PROMPT_METHODS)
    result.update(trainable_params=trainable, total_params=total)
    if not result["stopped"]:
        save_result(engine, spec, tok, rt, base_dir, bottleneck)
    return engine.module, result


def save_result(engine: Any, spec: Any, tok: Any, rt: Any, base_dir: str, bottleneck: dict[str, Any] | None) -> None:
    """Write ``output/adapter`` (and ``output/model`` when merged), or ``output/model`` for ``full``.

    Under ZeRO-3 every rank holds a shard: the full state is gathered first (all ranks), and a
    merge reloads the base from disk on rank 0, so no partitioned tensor is ever read.
    """
    state = engine._zero3_consolidated_16bit_state_dict() if engine.zero_optimization_stage() == 3 else None
    if not rt.is_main:
        return
    module = engine.module
    if spec.method == "full":
        out = os.path.join(rt.output_dir, "model")
        module.config.use_cache = True
        module.save_pretrained(out, state_dict=state, safe_serialization=True)
        tok.save_pretrained(out)
        rt.log(f"full result saved to {out}")
        return
    adapter = os.path.join(rt.output_dir, "adapter")
    if bottleneck is not None:
        from workloads.finetune.bottleneck import save_bottlenecks

        save_bottlenecks(module, bottleneck, adapter, state)
    else:
        kwargs = {"state_dict": state} if state is not None else {}
        module.save_pretrained(adapter, **kwargs)
    tok.save_pretrained(adapter)
    rt.log(f"{spec.method} adapter saved to {adapter}")
    if spec.adapter.merge:
        out = os.path.join(rt.output_dir, "model")
        merge_adapter(base_dir, adapter, out)
        tok.save_pretrained(out)
        rt.log(f"merged model saved to {out}")


def merge_adapter(base_dir: str, adapter_dir: str, out: str) -> None:
    """Base (from disk, on CPU) + saved adapter -> one merged model in ``out``."""
    from peft import PeftModel

    from workloads.pretrain.model import load_pretrained

    base = load_pretrained(base_dir, "auto")
    merged = PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()
    merged.config.use_cache = True
    merged.save_pretrained(out, safe_serialization=True)


if __name__ == "__main__":
    run_main(main, ranks_of="workloads.finetune")
