"""Fine-tunes on real transformers + peft + DeepSpeed (gloo, CPU): adapters (PEFT and bottleneck) train
alone, full changes the base, chat data trains on the assistant turns, a tokenizer must match the model."""

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


def _finetune(base: str, out: Path, method: str, steps: int = 12, lr: float = 1e-2, data: str = "qa.jsonl",
              **extra):
    from workloads.finetune.__main__ import run

    spec = FinetuneSpec(name=f"ft-{method}", data=str(CORPUS / data), output=str(out), base_model=base,
                        method=method, resources={"gpu": 0.5},
                        training={"steps": steps, "micro_batch_size": 8, "seq_len": 64, "lr": lr, "zero_stage": 0,
                                  "checkpoint_every": 1000, "eval_batches": 3, "log_every": 4}, **extra)
    return run(spec)


def _base_state(path: str) -> dict:
    from transformers import AutoModelForCausalLM

    return {k: v.clone() for k, v in AutoModelForCausalLM.from_pretrained(path).state_dict().items()}


@pytest.mark.parametrize("method", ["lora", "prefix", "prompt", "p_tuning", "p_tuning_v2", "ia3", "bottleneck"])
def test_adapter_methods_train_only_the_adapter(method: str, base_model: str, tmp_path: Path) -> None:
    before = _base_state(base_model)
    module, result = _finetune(base_model, tmp_path, method)
    assert result["val_loss"] < result["first_val_loss"], result
    assert 0 < result["trainable_params"] < result["total_params"] / 5  # prefix's MLP: ~12 % of a tiny model
    trainable = {n for n, p in module.named_parameters() if p.requires_grad}
    assert trainable and all(any(k in n for k in ("lora_", "prompt_encoder", "prefix", "ia3_", ".bottleneck."))
                             for n in trainable), trainable
    # the frozen base weights inside the trained model are bit-identical to the base model's
    base = module.get_base_model().state_dict() if hasattr(module, "get_base_model") else module.state_dict()
    for name, tensor in before.items():
        key = name if name in base else name.replace(".weight", ".base_layer.weight")
        if key in base:
            assert torch.equal(base[key], tensor), f"{method} changed base weight {name}"
    saved = tmp_path / "adapter"
    assert (saved / ("bottleneck_config.json" if method == "bottleneck" else "adapter_config.json")).is_file()
    assert sum(f.stat().st_size for f in saved.glob("*.safetensors")) < 200_000


def test_prefix_and_p_tuning_v2_follow_their_papers(base_model: str) -> None:
    """Prefix tuning (Li & Liang) trains prefixes through an MLP; P-Tuning v2 trains them directly."""
    from transformers import AutoModelForCausalLM

    from workloads.finetune.adapters import peft_config
    from workloads.spec_parts import AdapterSpec

    model = AutoModelForCausalLM.from_pretrained(base_model)
    assert peft_config("prefix", AdapterSpec(), model).prefix_projection is True
    assert peft_config("p_tuning_v2", AdapterSpec(), model).prefix_projection is False


def test_bottleneck_houlsby_adapts_attention_and_mlp(base_model: str) -> None:
    from transformers import AutoModelForCausalLM

    from workloads.finetune.bottleneck import add_bottlenecks

    model = AutoModelForCausalLM.from_pretrained(base_model)
    x = torch.randint(4, 400, (1, 12))
    before = model(input_ids=x).logits
    config = add_bottlenecks(model, "houlsby", reduction_factor=8)
    assert sorted({t.split(".")[-1] for t in config["targets"]}) == ["down_proj", "o_proj"] and config["width"] == 8
    assert torch.equal(model(input_ids=x).logits, before)  # zero-initialised up projection: starts as the base


def test_chat_messages_fine_tune_on_the_assistant_turns(base_model: str, tmp_path: Path) -> None:
    _, result = _finetune(base_model, tmp_path, "lora", steps=10, data="chat.jsonl",
                          dataset={"style": "chat", "packing": True})
    assert result["val_loss"] < result["first_val_loss"]
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()


def test_a_base_model_without_its_tokenizer_is_an_error(base_model: str, tmp_path: Path) -> None:
    import shutil

    from workloads.training.runtime import WorkloadError

    bare = tmp_path / "bare"
    shutil.copytree(base_model, bare, ignore=shutil.ignore_patterns("tokenizer*", "*.jinja"))
    with pytest.raises(WorkloadError, match="has no tokenizer files .* give dataset.tokenizer"):
        _finetune(str(bare), tmp_path / "out", "lora")
    other = tmp_path / "other-tok"
    from workloads.data.corpus import records
    from workloads.data.tokenizer import train_tokenizer

    train_tokenizer((row["text"] for _, row in records(str(CORPUS / "stories.txt"))), 600, str(other))
    with pytest.raises(WorkloadError, match="600 tokens but the model's embedding has 400 rows"):
        _finetune(base_model, tmp_path / "out2", "lora", dataset={"tokenizer": str(other)})


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
    assert 1 < result["perplexity"] < 1000 and result["validation_rows"] > 0
    assert result["generations"][0]["prompt"].startswith("Question") and result["generations"][0]["completion"]
