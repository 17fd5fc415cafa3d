"""`gpupool whatif`: history JSONL in, JSON/table and PNG plots out, clear errors for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from controlplane.cli.main import app

LIGHT = {"compute_mean_pct": 5, "compute_p95_pct": 10, "memory_mean_mib": 4000,
         "memory_peak_mib": 9000, "minutes": 60}


def job(job_id, when, **request):
    return {"id": job_id, "submitted_at": when, "run_s": 3600,
            "request": {"cpu_milli": 1000, "memory_mib": 1000, **request}, "usage": LIGHT}


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    """The hand-made workload of test_whatif_modes as a history file (ISO and Unix times)."""
    t0 = "2026-11-30T10:00:00Z"
    lines = [job("A", t0, gpus=2) | {"usage": {**LIGHT, "compute_mean_pct": 50}},
             job("B", 1796032800, gpus=1)]  # the same instant as t0, in Unix seconds
    lines += [job(f"C{i}", t0, gpu_milli=250) for i in range(4)]
    lines += [job(f"D{i}", t0, gpu_milli=500) for i in range(2)]
    lines.append({"id": "cpu", "submitted_at": t0, "run_s": 5, "request": {"cpu_milli": 1000}})
    history = tmp_path / "jobs.jsonl"
    history.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    nodes = tmp_path / "nodes.csv"
    nodes.write_text("sn,cpu_milli,memory_mib,gpu,model,gpu_memory_mib\n" +
                     "".join(f"n{i},64000,256000,2,X,80000\n" for i in range(8)))
    return history, nodes


def invoke(*args: str):
    return CliRunner().invoke(app, ["whatif", *args], env={"COLUMNS": "160"})


def test_history_json_and_plots(files, tmp_path):
    history, nodes = files
    out = invoke("--history", str(history), "--nodes", str(nodes), "--p95-wait", "60",
                 "--format", "json", "--plots", str(tmp_path / "img"))
    assert out.exit_code == 0, out.output
    report = json.loads(out.stdout)
    assert {m: f["gpus"] for m, f in report["modes"].items()} == {
        "exclusive": 10, "static-partitions": 8, "pooled": 6, "right-sized": 4}
    assert report["workload"]["excluded"] == {"cpu_only": 1}
    assert report["ratios"]["exclusive/right-sized"] == 2.5
    pngs = sorted(Path(p).name for p in report["plots"])
    assert pngs == ["whatif-jobs-exclusive.png", "whatif-jobs-gpus.png", "whatif-jobs-pooled.png",
                    "whatif-jobs-right-sized.png", "whatif-jobs-static-partitions.png"]
    for p in report["plots"]:
        assert Path(p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_table_names_every_mode(files):
    history, nodes = files
    out = invoke("--history", str(history), "--nodes", str(nodes), "--modes", "pooled,exclusive",
                 "--p95-wait", "60")
    assert out.exit_code == 0, out.output
    rows = {line.split()[1]: line.split() for line in out.stdout.splitlines()
            if line.startswith("│")}
    assert rows["pooled"][3:5] == ["6", "│"] and "1.67x" in rows["pooled"]
    assert rows["exclusive"][3] == "10" and "1.00x" in rows["exclusive"]
    assert "exclusive / mode: pooled 1.667x" in out.stdout


def test_bad_input_is_one_clear_line(files, tmp_path):
    history, nodes = files
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(job("ok", 0, gpus=1)) + "\n" +
                   json.dumps(job("neg", 0, gpu_milli=-5)) + "\n")
    notimes = tmp_path / "openb_pod_list_multigpu20.csv"
    notimes.write_text("name,cpu_milli,memory_mib,num_gpu,gpu_milli\np0,1000,1000,1,500\n")
    (tmp_path / "alibaba-genai-2026").mkdir()
    cases = [
        ((), "give one workload"),
        (("--history", str(history)), "--history needs --nodes"),
        (("--history", str(bad), "--nodes", str(nodes)), "bad.jsonl: line 2: request: gpu_milli must be"),
        (("--history", str(history), "--nodes", str(nodes), "--modes", "mig"), "unknown mode(s) mig"),
        (("--history", str(history), "--nodes", str(nodes), "--policy", "nope"), "nope"),
        (("--history", str(tmp_path / "missing.jsonl"), "--nodes", str(nodes)), "no such file"),
        (("--trace", str(notimes), "--nodes", str(nodes), "--usage", str(tmp_path / "alibaba-genai-2026")),
         "cannot be replayed in time"),
    ]
    for args, message in cases:
        out = invoke(*args)
        assert out.exit_code == 1, (args, out.output)
        assert message in " ".join(out.output.split()), (args, out.output)
        assert "Traceback" not in out.output
