"""Workload loading: trace pod lists with times, GenAI usage tarballs, history lines, compression."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from controlplane.whatif import genai
from controlplane.whatif.history import load_history
from controlplane.whatif.trace import load_trace
from controlplane.whatif.workload import WorkloadError

PODS = """name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,creation_time,deletion_time,scheduled_time
p0,1000,1024,1,1000,,LS,Running,0,500,100
p1,1000,1024,1,500,,LS,Running,50,300,60
p2,1000,1024,0,0,,LS,Running,10,20,10
p3,1000,1024,1,250,,LS,Pending,70,90,
p4,1000,1024,2,1000,V100M16|V100M32,LS,Failed,200,260,200
"""
NODES = "sn,cpu_milli,memory_mib,gpu,model\nn0,8000,65536,2,T4\nn1,8000,65536,4,V100M32\n"


def tarball(path: Path, name: str, text: str) -> None:
    data = text.encode()
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))


def usage_folder(tmp_path: Path, minutes: int = 60) -> Path:
    """Two pods: 'busy' at 50% and 24 GiB for every minute, 'idle' at 0% and 1 GiB."""
    folder = tmp_path / "alibaba-genai-2026"
    folder.mkdir(parents=True)
    util = ["value,timestamp_anon,container_ip"]
    memory = ["timestamp_anon,value,container_ip"]
    for t in range(minutes):
        util += [f"50.0,{t * 57}.0,busy", f"0.0,{t * 57}.0,idle"]
        memory += [f"{t * 57}.0,{24 * 2**30}.0,busy", f"{t * 57}.0,{2**30}.0,idle"]
    tarball(folder / genai.UTIL_FILE, "u.csv", "\n".join(util) + "\n")
    tarball(folder / genai.MEMORY_FILE, "m.csv", "\n".join(memory) + "\n")
    return folder


def test_trace_pods_become_jobs_with_their_run_times(tmp_path):
    pods, nodes = tmp_path / "pods.csv", tmp_path / "nodes.csv"
    pods.write_text(PODS)
    nodes.write_text(NODES)
    w = load_trace(pods, nodes, usage_folder(tmp_path), seed=1)
    assert [(j.job_id, j.submit_s, j.run_s) for j in w.jobs] == [
        ("p0", 0, 400), ("p1", 50, 240), ("p4", 200, 60)]
    assert w.excluded == {"cpu_only": 1, "never_started": 1}
    assert w.jobs[2].request.gpus == 2 and w.jobs[2].request.constraints.models == ("V100M16", "V100M32")
    assert w.jobs[1].request.gpu_milli == 500
    assert {n.gpu_memory_mib for n in w.nodes} == {48 * 1024}  # memory as a share of the card
    busy_or_idle = {(j.usage.compute_mean_pct, j.usage.memory_peak_mib) for j in w.jobs}
    assert busy_or_idle <= {(50.0, 24 * 1024.0), (0.0, 1024.0), (25.0, 12 * 1024.0), (0.0, 512.0)}
    assert w.jobs[1].usage.compute_p95_pct in (25.0, 0.0)  # half a GPU: half of the drawn use
    again = load_trace(pods, nodes, usage_folder(tmp_path / "again"), seed=1)
    assert [j.usage for j in again.jobs] == [j.usage for j in w.jobs]  # seeded draw


def test_compression_divides_arrival_gaps_only(tmp_path):
    pods, nodes = tmp_path / "pods.csv", tmp_path / "nodes.csv"
    pods.write_text(PODS)
    nodes.write_text(NODES)
    w = load_trace(pods, nodes).compressed(10)
    assert [(j.submit_s, j.run_s) for j in w.jobs] == [(0, 400), (5, 240), (20, 60)]
    assert "arrival times divided by 10" in w.notes[-1]
    with pytest.raises(WorkloadError, match="above 0"):
        w.compressed(0)


def test_genai_pods_below_an_hour_are_left_out(tmp_path):
    with pytest.raises(WorkloadError, match="no pod with 60 minutes"):
        genai.pod_bases(usage_folder(tmp_path, minutes=59))
    bases = genai.pod_bases(usage_folder(tmp_path / "hour", minutes=60))
    assert sorted(b.compute_p95_pct for b in bases) == [0.0, 50.0]


@pytest.mark.parametrize("line, message", [
    ("{", "line 1: not JSON"),
    ('{"id": 1, "submitted_at": "yesterday", "run_s": 1, "request": {"gpus": 1}}',
     "submitted_at must be Unix seconds or ISO 8601"),
    ('{"id": 1, "submitted_at": 0, "run_s": 1, "request": {"gpus": 1, "gpu_milli": 500}}',
     "whole gpus and a fraction"),
    ('{"id": 1, "submitted_at": 0, "run_s": 1, "request": {"gpu_milli": 1500}}', "above 1000"),
    ('{"id": 1, "submitted_at": 0, "request": {"gpus": 1}}', "missing run_s"),
    ('{"id": 1, "submitted_at": 0, "run_s": 1, "request": {"gpus": 1}, "usage": {"minutes": 3}}',
     "usage lacks compute_mean_pct"),
])
def test_bad_history_lines_name_file_line_and_field(tmp_path, line, message):
    history, nodes = tmp_path / "h.jsonl", tmp_path / "nodes.csv"
    history.write_text(line + "\n")
    nodes.write_text(NODES)
    with pytest.raises(WorkloadError, match=message):
        load_history(history, nodes)


def test_unknown_gpu_memory_needs_a_column(tmp_path):
    history, nodes = tmp_path / "h.jsonl", tmp_path / "nodes.csv"
    history.write_text(json.dumps({"id": 1, "submitted_at": 0, "run_s": 1, "request": {"gpus": 1}}))
    nodes.write_text("sn,cpu_milli,memory_mib,gpu,model\nn0,1000,1000,1,G9\n")
    with pytest.raises(WorkloadError, match="memory of GPU model 'G9' is unknown"):
        load_history(history, nodes)
    nodes.write_text("sn,cpu_milli,memory_mib,gpu,model,gpu_memory_mib\nn0,1000,1000,1,G9,1234\n")
    assert load_history(history, nodes).nodes[0].gpu_memory_mib == 1234
