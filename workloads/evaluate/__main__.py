"""Entry point: ``python -m workloads.evaluate --spec-json '{...}'``; writes ``output/eval.json``."""

from __future__ import annotations

import json
import math
import os
from typing import Any

from workloads import progress
from workloads.paths import resolve_spec_paths
from workloads.training.runtime import WorkloadError, read_spec_json, run_main, setup


def load_model(model_path: str, adapter_path: str | None, device: Any, needs: str | None = None) -> Any:
    """The model, with a PEFT or bottleneck adapter on top when ``adapter_path`` is given."""
    from workloads.finetune.bottleneck import is_bottleneck_dir, load_bottlenecks
    from workloads.pretrain.model import load_pretrained

    if not os.path.isfile(os.path.join(model_path, "config.json")):
        raise WorkloadError(f"model_path: {model_path} is not a local model directory (no config.json)")
    model = load_pretrained(model_path, "fp32")
    if adapter_path:
        if is_bottleneck_dir(adapter_path):
            return load_bottlenecks(model, adapter_path).to(device).eval()
        if not os.path.isfile(os.path.join(adapter_path, "adapter_config.json")):
            hint = f"; run first: {needs}" if needs else ""
            raise WorkloadError(f"adapter_path: {adapter_path} holds no adapter (no adapter_config.json){hint}")
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter_path)
    return model.to(device).eval()


def generate(model: Any, tok: Any, prompts: list[str], max_new_tokens: int, device: Any) -> list[dict[str, str]]:
    import torch

    out = []
    for p in prompts:
        ids = tok(p, return_tensors="pt").to(device)
        with torch.no_grad():
            gen = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tok.pad_token_id or tok.eos_token_id)
        out.append({"prompt": p, "completion": tok.decode(gen[0][ids["input_ids"].shape[1]:], skip_special_tokens=True)})
    return out


def main(argv: list[str]) -> int:
    from workloads.specs import EvaluateSpec

    spec = resolve_spec_paths(EvaluateSpec.model_validate(read_spec_json(argv)))
    rt = setup("fp32", spec.output)
    from workloads.data.pipeline import load_splits
    from workloads.data.tokenizer import has_tokenizer, load_tokenizer
    from workloads.hub import resolve_model
    from workloads.training.loop import announce, evaluate_loss

    announce(rt, spec.kind)
    where = {"cache": spec.hub_cache, "needs": spec.needs}
    try:
        model_path = resolve_model(spec.model_path, "model_path", **where)
        adapter = spec.adapter_path
        tok_dir = spec.dataset.tokenizer or (adapter if adapter and os.path.isdir(adapter) and has_tokenizer(adapter)
                                             else model_path)
        tok = load_tokenizer(tok_dir, "tokenizer", **where)
    except (ValueError, OSError) as exc:
        raise WorkloadError(str(exc)) from None
    model = load_model(model_path, spec.adapter_path, rt.device, spec.needs)
    result: dict[str, Any] = {"model_path": spec.model_path, "adapter_path": spec.adapter_path}
    if spec.data:
        try:
            _, val, stats = load_splits(spec.data, spec.dataset, tok, spec.seq_len, rt.output_dir, layout="packed",
                                        **where)
        except (ValueError, OSError) as exc:
            raise WorkloadError(str(exc)) from None
        loss = evaluate_loss(model, val, spec.batch_size, spec.max_batches, rt.device)
        result.update(val_loss=loss, perplexity=math.exp(min(loss, 50)), validation_rows=stats["validation_rows"])
        progress.emit(step=1, total=1, val_loss=loss, val_ppl=result["perplexity"])
    if spec.prompts:
        result["generations"] = generate(model, tok, spec.prompts, spec.max_new_tokens, rt.device)
        for g in result["generations"]:
            print(f"prompt: {g['prompt']!r} -> {g['completion']!r}", flush=True)
    path = os.path.join(rt.output_dir, "eval.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
    print(f"evaluation written to {path}", flush=True)
    return 0


if __name__ == "__main__":
    run_main(main)
