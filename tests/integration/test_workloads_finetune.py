"""Fine-tunes on real transformers + peft + DeepSpeed (gloo, CPU): adapters train alone, full changes the base."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")
pytest.importorskip("deepspeed")

from workloads.specs import FinetuneSpec  # noqa: E402

CORPUS = Path(__file__).resolve().parents[2] / "examples" / "corpus"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def base_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    from workloads.pretrain.tiny import save_tiny_model

    for k, v in {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "RANK": "0", "WORLD_SIZE": "1",
                 "LOCAL_RANK": "0"}.items():
        os.environ[k] = v
    return save_tiny_model(str(tmp_path_factory.mktemp("base") / "tiny"), hidden=64, layers=2, heads=2,
                           vocab_size=400, max_seq_len=128)


def _finetune(base: str, out: Path, method: str, steps: int = 12, lr: float = 1e-2):
    from workloads.finetune.__main__ import run

    spec = FinetuneSpec(name=f"ft-{method}", data=str(CORPUS / "qa.jsonl"), output=str(out), base_model=base,
                        method=method,
                        training={"steps": steps, "micro_batch_size": 8, "seq_len": 48, "lr": lr, "zero_stage": 0,
                                  "checkpoint_every": 1000, "eval_batches": 3, "log_every": 4})
    return run(spec)


def _base_state(path: str) -> dict:
    from transformers import AutoModelForCausalLM

    return {k: v.clone() for k, v in AutoModelForCausalLM.from_pretrained(path).state_dict().items()}


@pytest.mark.parametrize("method", ["lora", "prefix", "prompt", "p_tuning", "p_tuning_v2", "ia3"])
def test_adapter_methods_train_only_the_adapter(method: str, base_model: str, tmp_path: Path) -> None:
    before = _base_state(base_model)
    module, result = _finetune(base_model, tmp_path, method)
    assert result["val_loss"] < result["first_val_loss"], result
    assert 0 < result["trainable_params"] < result["total_params"] / 5  # p_tuning_v2 MLP: ~12 % of a tiny model
    trainable = {n for n, p in module.named_parameters() if p.requires_grad}
    assert trainable and all(("lora_" in n or "prompt_encoder" in n or "prefix" in n or "ia3_" in n)
                         for n in trainable), trainable
    # the frozen base weights inside the trained model are bit-identical to the base model's
    base = module.get_base_model().state_dict()
    for name, tensor in before.items():
        key = name if name in base else name.replace(".weight", ".base_layer.weight")
        if key in base:
            assert torch.equal(base[key], tensor), f"{method} changed base weight {name}"
    saved = tmp_path / "adapter"
    assert (saved / "adapter_config.json").is_file()
    assert sum(f.stat().st_size for f in saved.glob("adapter_model.*")) < 200_000


def test_full_finetune_changes_the_base_weights(base_model: str, tmp_path: Path) -> None:
    before = _base_state(base_model)
    module, result = _finetune(base_model, tmp_path, "full", steps=8, lr=2e-3)
    assert result["val_loss"] < result["first_val_loss"]
    assert result["trainable_params"] == result["total_params"]
    after = _base_state(str(tmp_path / "model"))
    changed = [n for n in before if not torch.equal(before[n], after[n])]
    assert len(changed) > len(before) // 2


def test_qlora_on_cpu_fails_with_a_clear_error(base_model: str, tmp_path: Path) -> None:
    from workloads.training.runtime import WorkloadError

    with pytest.raises(WorkloadError, match="qlora needs an NVIDIA GPU"):
        _finetune(base_model, tmp_path, "qlora")


def test_evaluate_reports_perplexity_and_generations_with_an_adapter(base_model: str, tmp_path: Path) -> None:
    import json

    from workloads.evaluate.__main__ import main as evaluate

    _finetune(base_model, tmp_path / "ft", "lora", steps=3)
    spec = {"kind": "evaluate", "name": "ev", "model_path": base_model, "adapter_path": str(tmp_path / "ft" / "adapter"),
            "data": str(CORPUS / "qa.jsonl"), "output": str(tmp_path / "ev"), "seq_len": 48, "max_batches": 3,
            "prompts": ["Question: What is true about ice?\nAnswer:"], "max_new_tokens": 5}
    assert evaluate(["--spec-json", json.dumps(spec)]) == 0
    result = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert 1 < result["perplexity"] < 1000 and result["validation_blocks"] > 0
    assert result["generations"][0]["prompt"].startswith("Question") and result["generations"][0]["completion"]
