"""Every training path runs on CPU (gloo): ZeRO 1 and 3, optimizer offload (DeepSpeed's CPU Adam),
LoRA save and merge under ZeRO-3 (the merged model answers like the adapter model), continued
pre-training from model.path (step 0's loss is the base model's), and the spec's grace period."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("deepspeed")
pytest.importorskip("peft")

from tests.support.server import free_port  # noqa: E402
from tests.support.waiting import wait_until  # noqa: E402

CORPUS = Path(__file__).resolve().parents[2] / "examples" / "corpus"
pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module", autouse=True)
def single_rank():
    saved = dict(os.environ)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), RANK="0", WORLD_SIZE="1", LOCAL_RANK="0",
                      GPUPOOL_CPU_THREADS="2")
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="module")
def base_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    from workloads.pretrain.tiny import save_tiny_model

    return save_tiny_model(str(tmp_path_factory.mktemp("base") / "tiny"), hidden=64, layers=2, heads=2,
                           vocab_size=400, max_seq_len=128, seed=7)  # not the weights a seed-0 pre-train starts from


def _pretrain(out: Path, capsys, **extra) -> list[dict]:
    from workloads.pretrain.__main__ import main
    from workloads.progress import parse

    spec = {"kind": "pretrain", "name": "pt", "data": str(CORPUS / "stories.txt"), "output": str(out),
            "resources": {"gpu": 0.5}, "model": {"hidden_size": 64, "num_layers": 2, "num_heads": 2, "max_seq_len": 128},
            "dataset": {"vocab_size": 400},
            "training": {"steps": 8, "micro_batch_size": 8, "seq_len": 48, "lr": 3e-3, "checkpoint_every": 1000,
                         "eval_batches": 3, "log_every": 4, **extra.pop("training", {})}, **extra}
    capsys.readouterr()
    assert main(["--spec-json", json.dumps(spec)]) == 0
    return [p for p in map(parse, capsys.readouterr().out.splitlines()) if p]


@pytest.mark.parametrize("stage", [1, 3])
def test_pretrain_runs_on_zero_stage(stage: int, tmp_path: Path, capsys) -> None:
    lines = _pretrain(tmp_path, capsys, training={"zero_stage": stage})
    done = lines[-1]
    assert done["done"] and done["val_loss"] < done["first_val_loss"] - 0.3
    from transformers import AutoModelForCausalLM

    saved = AutoModelForCausalLM.from_pretrained(tmp_path / "model")  # ZeRO-3 shards gathered before saving
    assert all(p.numel() > 0 for p in saved.parameters())


def test_continued_pretraining_starts_from_the_given_weights(base_model: str, tmp_path: Path, capsys) -> None:
    from transformers import AutoModelForCausalLM

    from workloads.data.pipeline import load_splits
    from workloads.data.tokenizer import load_tokenizer
    from workloads.spec_parts import DatasetSpec
    from workloads.training.loop import evaluate_loss

    scratch = _pretrain(tmp_path / "scratch", capsys, training={"steps": 1})[1]["val_loss"]
    lines = _pretrain(tmp_path, capsys, model={"path": base_model, "max_seq_len": 128},
                      training={"zero_stage": 2, "lr": 1e-3})
    first = lines[1]["val_loss"]
    assert first != pytest.approx(scratch, abs=1e-3)
    tok = load_tokenizer(base_model)
    _, val, _ = load_splits(str(CORPUS / "stories.txt"), DatasetSpec(vocab_size=400), tok, 48, str(tmp_path))
    base = AutoModelForCausalLM.from_pretrained(base_model)
    assert first == pytest.approx(evaluate_loss(base, val, 8, 3, torch.device("cpu")), abs=1e-4)
    assert lines[-1]["val_loss"] < first


def _finetune(base: str, out: Path, method: str, **training):
    from workloads.finetune.__main__ import run
    from workloads.specs import FinetuneSpec

    spec = FinetuneSpec(name="ft", data=str(CORPUS / "qa_pairs.jsonl"), output=str(out), base_model=base,
                        method=method, dataset={"style": "prompt_response"}, adapter={"merge": method == "lora"},
                        resources={"gpu": 0.5},
                        training={"steps": 8, "micro_batch_size": 4, "seq_len": 96, "lr": 1e-2, "checkpoint_every": 1000,
                                  "eval_batches": 2, "log_every": 4, **training})
    return run(spec)


def test_lora_save_and_merge_under_zero_3_match(base_model: str, tmp_path: Path) -> None:
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    _, result = _finetune(base_model, tmp_path, "lora", zero_stage=3)
    assert result["val_loss"] < result["first_val_loss"]
    saved = load_file(tmp_path / "adapter" / "adapter_model.safetensors")
    lora_b = [v for k, v in saved.items() if "lora_B" in k]
    assert lora_b and all(v.numel() > 0 for v in lora_b) and any(v.abs().sum() > 0 for v in lora_b)  # gathered, trained
    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_model), tmp_path / "adapter").eval()
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "model").eval()
    x = torch.randint(4, 400, (2, 24))
    with torch.no_grad():
        a, m = adapted(input_ids=x).logits, merged(input_ids=x).logits
        plain = AutoModelForCausalLM.from_pretrained(base_model).eval()(input_ids=x).logits
    assert torch.allclose(a, m, atol=1e-4) and not torch.allclose(a, plain, atol=1e-4)


def test_optimizer_offload_runs_deepspeed_cpu_adam(base_model: str, tmp_path: Path, capsys) -> None:
    _, result = _finetune(base_model, tmp_path, "full", zero_stage=2, offload_optimizer=True, lr=2e-3)
    assert "optimizer DeepSpeedCPUAdam (offloaded to the CPU)" in capsys.readouterr().out
    assert result["val_loss"] < result["first_val_loss"]
    assert (tmp_path / "model" / "config.json").is_file()


RANK = textwrap.dedent("""
    import os, signal, sys, time
    mode = os.environ["MODE"]
    def on_term(*_):
        if mode == "checkpoint":
            sys.exit(143)
    signal.signal(signal.SIGTERM, on_term)  # before the line the test waits for
    # one write per line: the ranks share the pipe, and print() writes each argument separately
    # when the output is unbuffered
    sys.stdout.write(f"rank {os.environ['RANK']} of {os.environ['WORLD_SIZE']}\\n")
    sys.stdout.flush()
    while True:
        time.sleep(0.05)
""")


@pytest.mark.parametrize(("mode", "code"), [("checkpoint", 143), ("stuck", 1)])
def test_member_launcher_gives_ranks_the_spec_grace(mode: str, code: int, tmp_path: Path) -> None:
    """Ranks that stop on SIGTERM make the member exit 143; ranks that ignore it are killed after
    GPUPOOL_GRACE_S (set from spec.grace_s by the launch plan), not before."""
    (tmp_path / "fake_rank.py").write_text(RANK)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
           "GPUPOOL_NPROC_PER_NODE": "2", "GPUPOOL_NNODES": "1", "GPUPOOL_NODE_RANK": "0", "GPUPOOL_GRACE_S": "1.5",
           "MODE": mode}
    code_ = "from workloads.training.launcher import launch; import sys; sys.exit(launch('fake_rank', []))"
    proc = subprocess.Popen([sys.executable, "-c", code_], env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    seen = [proc.stdout.readline() for _ in range(3)]
    assert sum("rank" in line and "of 2" in line for line in seen) == 2, seen
    import time

    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    wait_until(lambda: proc.poll() is not None, 30, "the launcher to exit")
    assert proc.returncode == code
    if mode == "stuck":
        assert time.monotonic() - t0 >= 1.5
