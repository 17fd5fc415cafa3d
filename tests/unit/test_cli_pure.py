"""Pure parts of the CLI: spec file parsing, error lines, config resolution, formatting."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from rich.console import Console

from controlplane.cli import render
from controlplane.cli.config import resolve, write_config
from controlplane.cli.errors import CliError
from controlplane.cli.runtime import parse_shape
from controlplane.cli.specfile import load_spec_file, parse_spec_text
from controlplane.client import GpupoolError
from controlplane.schemas import Job, JobRequest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def text_of(renderable) -> str:
    console = Console(width=200, record=True, color_system=None)
    console.print(renderable)
    return console.export_text()


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("demo-*.yaml")), ids=lambda p: p.name)
def test_demo_examples_are_valid_specs(path):
    spec = load_spec_file(path)
    assert spec["name"] == path.stem


@pytest.mark.parametrize(("text", "needle"), [
    ("name: x\ncommand: [a\n", "invalid YAML at line 3"),
    ("", "empty"),
    ("- a\n- b\n", "must be a mapping"),
    ("command: [a]\n", "name: Field required"),
    ("name: x\ncommand: [a]\nresources: {gpu: 1.5}\n", "resources.gpu: must be a fraction"),
    ("name: x\ncommand: [a]\nresource: {gpu: 1}\n", "resource: unknown field"),
    ("name: x\ncommand: [a]\nkind: nope\n", "kind: unknown kind 'nope'"),
    ("name: x\ncommand: [a]\npriority: urgent\n", "priority: unknown priority class"),
    ("name: a\ncommand: [a]\n---\nname: b\ncommand: [b]\n", "2 YAML documents"),
])
def test_bad_specs_name_what_is_wrong(text, needle):
    with pytest.raises(CliError) as err:
        parse_spec_text(text, "job.yaml")
    assert needle in str(err.value)
    assert str(err.value).startswith("job.yaml: ")
    assert "\n" not in str(err.value)


def test_missing_spec_file(tmp_path):
    with pytest.raises(CliError, match="no such file"):
        load_spec_file(tmp_path / "nope.yaml")
    with pytest.raises(CliError, match="is a directory"):
        load_spec_file(tmp_path)


def test_problem_json_becomes_one_line():
    resp = httpx.Response(422, json={
        "type": "about:blank", "title": "Unprocessable Entity", "status": 422,
        "detail": "invalid job spec", "errors": [{"field": "resources.gpu", "message": "too big"}]})
    err = GpupoolError.from_response(resp)
    assert err.status == 422
    assert str(err) == "422 Unprocessable Entity: invalid job spec (resources.gpu: too big)"


def test_non_problem_error_bodies_are_still_readable():
    assert "404" in str(GpupoolError.from_response(httpx.Response(404, text="Not Found")))
    fastapi_style = httpx.Response(422, json={"detail": [{"loc": ["body", "name"], "msg": "required"}]})
    assert "name: required" in str(GpupoolError.from_response(fastapi_style))


def test_config_resolution_order(tmp_path, monkeypatch):
    monkeypatch.setenv("GPUPOOL_HOME", str(tmp_path))
    monkeypatch.delenv("GPUPOOL_CONFIG", raising=False)
    monkeypatch.delenv("GPUPOOL_SERVER", raising=False)
    monkeypatch.delenv("GPUPOOL_TOKEN", raising=False)
    assert resolve(None, None).server == "http://127.0.0.1:8080"
    path = write_config("http://127.0.0.1:9999", "from-file")
    assert path == tmp_path / "config.yaml" and oct(path.stat().st_mode & 0o777) == "0o600"
    assert (resolve(None, None).server, resolve(None, None).token) == ("http://127.0.0.1:9999", "from-file")
    monkeypatch.setenv("GPUPOOL_TOKEN", "from-env")
    assert resolve(None, None).token == "from-env"
    assert resolve("127.0.0.1:1", "opt") == type(resolve(None, None))("http://127.0.0.1:1", "opt")


def test_broken_config_file_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("GPUPOOL_CONFIG", str(tmp_path / "c.yaml"))
    (tmp_path / "c.yaml").write_text("server: [\n")
    with pytest.raises(CliError, match="not valid YAML"):
        resolve(None, None)


def test_simulate_shapes():
    assert parse_shape("2x4xH100-80GB") == (2, 4, "H100-80GB")
    assert parse_shape("4xT4") == (1, 4, "T4")
    for bad in ("2x4x", "0x4xH100", "", "2x4xH100 80GB", "100x1xT4"):
        with pytest.raises(CliError):
            parse_shape(bad)


def request(gpu: float, nodes: int = 1, gpu_memory_mib: int = 0) -> JobRequest:
    return JobRequest(gpu=gpu, nodes=nodes, gpu_memory_mib=gpu_memory_mib, cpu_milli=1000, memory_mib=1024)


def job(**fields) -> Job:
    """A Job as the API answers it, with the fields a test does not care about filled in."""
    base = {"id": "1", "name": "j", "kind": "custom", "team": "default", "queue": "default",
            "user": "admin", "status": "pending", "priority": 0, "request": request(1),
            "attempt": 0, "max_attempts": 3, "created_at": "2026-01-01T00:00:00Z"}
    return Job.model_validate({**base, **fields})


def test_formatting():
    assert render.fmt_request(request(0.25, gpu_memory_mib=20480)) == "0.25 GPU, 20 GiB"
    assert render.fmt_request(request(2, nodes=2)) == "2 GPU x 2 nodes"
    assert render.fmt_request(request(0)) == "cpu only"
    assert render.fmt_mib(81559) == "79.6 GiB" and render.fmt_mib(512) == "512 MiB"
    assert render.fmt_progress({"step": 5, "total": 20}) == "25% (5/20)"
    assert render.fmt_progress({"step": "x"}) == "-" and render.fmt_progress(None) == "-"
    assert render.progress_fraction({"step": 30, "total": 20}) == 1.0


def test_jobs_table_shows_pending_reason_and_progress():
    jobs = [
        job(id="7", name="big", status="pending", request=request(8),
            pending_reason={"code": "capacity", "message": "no node has 8 free H100-80GB"}),
        job(id="8", name="small", status="running", request=request(0.25),
            progress={"step": 3, "total": 4}),
    ]
    out = text_of(render.jobs_table(jobs, show_team=False))
    assert "[capacity] no node has 8 free H100-80GB" in out
    assert "75% (3/4)" in out and "0.25 GPU" in out


def test_job_detail_has_placement_and_progress_bar():
    running = job(id="9", status="running", team="t", queue="q", request=request(0.5), attempt=1,
                  progress={"step": 1, "total": 2, "loss": 0.5},
                  placement=[{"rank": 0, "node": "n1", "slices": [
                      {"accelerator_uuid": "GPU-abc", "compute_milli": 500, "memory_mib": 40960}]}])
    out = text_of(render.job_detail(running))
    assert "GPU-abc" in out and "0.5 GPU" in out and "40 GiB" in out
    assert "50% (1/2)" in out and "loss=0.5" in out
