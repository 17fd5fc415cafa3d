"""Workload specs: kinds, derived resources, clear errors, launch plans, progress lines."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from controlplane.core.wire import PROGRESS_PREFIX
from workloads import progress
from workloads.launch import build_launch
from workloads.specs import (
    CustomSpec,
    EvaluateSpec,
    FinetuneSpec,
    InferenceSpec,
    PretrainSpec,
    Resources,
    parse_job_spec,
)


R = {"resources": {"gpu": 0.5}}


def test_each_kind_parses_to_its_class() -> None:
    assert isinstance(parse_job_spec({"name": "c", "command": "echo hi"}), CustomSpec)
    assert isinstance(parse_job_spec({"kind": "pretrain", "name": "p", "data": "/d"}), PretrainSpec)
    assert isinstance(parse_job_spec({"kind": "finetune", "name": "f", "data": "/d", "base_model": "/m", **R}),
                      FinetuneSpec)
    assert isinstance(parse_job_spec({"kind": "evaluate", "name": "e", "model_path": "/m", "prompts": ["x"], **R}),
                      EvaluateSpec)
    assert isinstance(parse_job_spec({"kind": "inference", "name": "i", "model_path": "/m", **R}), InferenceSpec)


def test_without_estimate_a_packaged_spec_must_give_its_gpus() -> None:
    """The server's mode: no model file is opened, so resources.gpu must be in the spec."""
    with pytest.raises(ValidationError, match="give resources .* gpupool CLI"):
        parse_job_spec({"kind": "pretrain", "name": "p", "data": "/d"}, estimate=False)
    with pytest.raises(ValidationError, match="give resources"):
        parse_job_spec({"kind": "finetune", "name": "f", "data": "/d", "base_model": "/m",
                        "resources": {"cpu_milli": 100}}, estimate=False)
    ok = parse_job_spec({"kind": "finetune", "name": "f", "data": "/d", "base_model": "/m", **R}, estimate=False)
    assert ok.resources.gpu == 0.5
    assert parse_job_spec({"name": "c", "command": "echo"}, estimate=False).resources.gpu == 0


def test_estimate_reads_the_model_config_or_says_what_to_give(tmp_path) -> None:
    with pytest.raises(ValidationError, match="base_model: cannot read the config.json of /nowhere"):
        parse_job_spec({"kind": "finetune", "name": "f", "data": "/d", "base_model": "/nowhere"})
    (tmp_path / "config.json").write_text(json.dumps({
        "model_type": "llama", "hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32,
        "intermediate_size": 11008, "vocab_size": 32000, "max_position_embeddings": 4096}))
    s = parse_job_spec({"kind": "finetune", "name": "f", "data": "/d", "base_model": str(tmp_path),
                        "method": "full", "training": {"zero_stage": 3, "micro_batch_size": 1, "seq_len": 1024}})
    assert s.resources.gpu >= 2  # a 7B full fine-tune needs several GPUs


def test_tensor_x_pipeline_parallel_must_equal_the_gpus_granted() -> None:
    base = {"kind": "inference", "name": "i", "model_path": "/m"}
    assert parse_job_spec({**base, "tensor_parallel_size": 2, "resources": {"gpu": 2}}).granted_gpus == 2
    assert parse_job_spec({**base, "pipeline_parallel_size": 2, "resources": {"gpu": 1, "nodes": 2}})
    with pytest.raises(ValidationError, match="= 4, but resources grant 2 GPU"):
        parse_job_spec({**base, "tensor_parallel_size": 4, "resources": {"gpu": 2}})
    with pytest.raises(ValidationError, match="must be equal"):
        parse_job_spec({**base, "tensor_parallel_size": 2, "resources": {"gpu": 0.5}})


def test_omitted_resources_are_derived_from_the_estimate() -> None:
    s = parse_job_spec({"kind": "pretrain", "name": "p", "data": "/d"})
    assert 0 < s.resources.gpu < 1 and s.resources.gpu_memory_mib > 0
    big = parse_job_spec({"kind": "pretrain", "name": "p", "data": "/d",
                          "model": {"params_b": 13, "hidden_size": 5120, "num_layers": 40, "num_heads": 40,
                                    "max_seq_len": 2048},
                          "training": {"zero_stage": 3, "micro_batch_size": 1, "seq_len": 2048,
                                       "activation_checkpointing": True}})
    assert big.resources.gpu >= 2 and big.resources.gpu == int(big.resources.gpu)
    tp = parse_job_spec({"kind": "inference", "name": "i", "model_path": "/m", "tensor_parallel_size": 2,
                         "model": {"hidden_size": 512, "num_layers": 2, "num_heads": 8}})
    assert tp.resources.gpu == 2
    # a round trip keeps the derived request (it is now explicit)
    again = parse_job_spec(json.loads(s.model_dump_json()))
    assert again.resources == s.resources


def test_explicit_resources_win() -> None:
    s = parse_job_spec({"kind": "pretrain", "name": "p", "data": "/d", "resources": {"gpu": 0.5}})
    assert s.resources == Resources(gpu=0.5)
    partial = parse_job_spec({"kind": "pretrain", "name": "p", "data": "/d",
                              "resources": {"cpu_milli": 4000, "models": ["A100-80GB"]}})
    assert 0 < partial.resources.gpu < 1  # the GPU part still comes from the estimate
    assert partial.resources.cpu_milli == 4000 and partial.resources.models == ["A100-80GB"]
    assert parse_job_spec(json.loads(partial.model_dump_json())).resources == partial.resources


@pytest.mark.parametrize(("spec", "field_words"), [
    ({"kind": "pretrain", "name": "p"}, "data"),
    ({"kind": "pretrain", "name": "p", "data": "/d", "training": {"seq_len": 4096}}, "seq_len"),
    ({"kind": "pretrain", "name": "p", "data": "/d", "model": {"hidden_size": 100, "num_heads": 3}}, "num_heads"),
    ({"kind": "pretrain", "name": "p", "data": "/d", "training": {"zero_stage": 4}}, "zero_stage"),
    ({"kind": "finetune", "name": "f", "data": "/d", "base_model": "/m", "method": "dora"}, "method"),
    ({"kind": "finetune", "name": "f", "data": "/d", "base_model": "/m", "method": "prompt",
      "adapter": {"merge": True}}, "merge"),
    ({"kind": "inference", "name": "i", "model_path": "/m", "kv_cache_dtype": "int3"}, "kv_cache_dtype"),
    ({"kind": "inference", "name": "i", "model_path": "/m", "gpu_memory_utilization": 1.5}, "gpu_memory_utilization"),
    ({"kind": "evaluate", "name": "e", "model_path": "/m"}, "data"),
    ({"kind": "training", "name": "x"}, "kind"),
])
def test_bad_specs_name_the_field(spec: dict, field_words: str) -> None:
    with pytest.raises(ValidationError) as err:
        parse_job_spec(spec)
    assert field_words in str(err.value)


def test_launch_plans() -> None:
    p = parse_job_spec({"kind": "pretrain", "name": "p", "data": "/d", "output": "/shared/p", "env": {"A": "1"}})
    plan = build_launch(p.model_dump(mode="json"), rank=1, world_size=2)
    assert plan.argv == ["python", "-m", "workloads.pretrain"]  # the spec travels as a file
    assert plan.env["GPUPOOL_OUTPUT_DIR"] == "/shared/p" and plan.env["A"] == "1"
    assert plan.port_count == 0 and plan.readiness_path is None
    inf = parse_job_spec({"kind": "inference", "name": "i", "model_path": "/m", "pipeline_parallel_size": 2,
                          "resources": {"gpu": 1, "nodes": 2}})
    inf = inf.model_dump(mode="json")
    head, worker = build_launch(inf, rank=0, world_size=2), build_launch(inf, rank=1, world_size=2)
    assert (head.port_count, head.readiness_path) == (1, "/health")
    assert (worker.port_count, worker.readiness_path) == (0, None)
    c = parse_job_spec({"name": "c", "command": ["tritonserver", "--http-port", "$GPUPOOL_PORT"], "ports": 2,
                        "readiness_path": "/v2/health/ready"})
    c = c.model_dump(mode="json")
    cp = build_launch(c)
    assert cp.argv[0] == "tritonserver" and cp.port_count == 2 and cp.readiness_path == "/v2/health/ready"
    with pytest.raises(ValueError, match="rank 2"):
        build_launch(c, rank=2, world_size=2)


def test_progress_lines_round_trip_and_share_the_wire_prefix() -> None:
    assert progress.PROGRESS_PREFIX == PROGRESS_PREFIX
    progress.set_context()  # a training run earlier in this process may have set its topology
    line = progress.emit(stream=open("/dev/null", "w"), step=3, total=10, loss=1.5, bad=float("nan"), eta_s=None)
    assert line.startswith(PROGRESS_PREFIX)
    assert progress.parse(line) == {"step": 3, "total": 10, "loss": 1.5}
    assert progress.parse("loss 1.5") is None
    assert progress.parse(PROGRESS_PREFIX + "{not json") is None
    clock = iter([0.0, 10.0]).__next__
    m = progress.Meter(total_steps=100, start_step=50, clock=clock)
    m.add_tokens(1000)
    f = m.figures(60)
    assert f["tokens_per_s"] == 100.0 and f["eta_s"] == 40.0


@pytest.mark.parametrize("name", ["pretrain", "finetune-lora", "evaluate", "inference", "custom"])
def test_shipped_examples_are_valid_specs(name: str) -> None:
    from pathlib import Path

    import yaml

    path = Path(__file__).resolve().parents[2] / "examples" / f"{name}.yaml"
    spec = parse_job_spec(yaml.safe_load(path.read_text()))
    assert spec.kind == name.split("-")[0]
    plan = build_launch(spec.model_dump(mode="json"))
    assert plan.argv and plan.argv[0] == "python"


def test_cli_estimates_a_packaged_spec_before_submitting(tmp_path) -> None:
    """The CLI reads the model where it is and sends numbers; the server never opens spec paths."""
    from controlplane.cli.errors import CliError
    from controlplane.cli.specfile import parse_spec_text

    sent = parse_spec_text("kind: pretrain\nname: p\ndata: /d\nresources: {cpu_milli: 300}\n")
    assert 0 < sent["resources"]["gpu"] < 1 and sent["resources"]["cpu_milli"] == 300
    assert parse_job_spec(sent, estimate=False).resources.gpu == sent["resources"]["gpu"]
    explicit = parse_spec_text("kind: pretrain\nname: p\ndata: /d\nresources: {gpu: 2}\n")
    assert explicit["resources"] == {"gpu": 2}
    with pytest.raises(CliError, match="base_model: cannot read the config.json"):
        parse_spec_text(f"kind: finetune\nname: f\ndata: /d\nbase_model: {tmp_path}/none\n")


@pytest.mark.parametrize(("name", "field"), [("finetune-lora", "base_model"), ("evaluate", "model_path"),
                                              ("inference", "model_path")])
def test_examples_that_need_another_job_say_so_first_and_in_the_error(name: str, field: str) -> None:
    """Run on a fresh pool, the example fails with the same instruction its first line gives."""
    from pathlib import Path

    import yaml

    from workloads.hub import HubError, resolve_model

    text = (Path(__file__).resolve().parents[2] / "examples" / f"{name}.yaml").read_text()
    assert text.splitlines()[0].startswith("# Run examples/pretrain.yaml")
    spec = parse_job_spec(yaml.safe_load(text))
    assert spec.needs and spec.needs.startswith("gpupool submit examples/pretrain.yaml")
    path = getattr(spec, field)
    if Path(path).exists():
        pytest.skip(f"{path} exists here (the pre-train example has run)")
    with pytest.raises(HubError, match=f"{field}: {path} does not exist on this node; run first: gpupool submit "
                                       "examples/pretrain.yaml"):
        resolve_model(path, field, needs=spec.needs)
