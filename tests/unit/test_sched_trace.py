"""Trace replay and `bench trace`: inflation, seeded order, smoke run, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from controlplane.cli.bench import bench_app, parse_seeds
from controlplane.scheduler import replay, tracefile
from controlplane.scheduler.tracefile import TracePod

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "alibaba-gpu-v2023"


def pods(n, milli=500):
    return [TracePod(f"p{i:03d}", 1000, 1024, 1, milli) for i in range(n)]


def test_arrival_order_inflates_to_tune_times_capacity_and_is_seeded():
    base = pods(10)
    order = replay.arrival_order(base, capacity_milli=4000, seed=42)
    assert sum(p.gpu_demand for p in order) >= 1.3 * 4000
    assert sorted(p.name for p in order[:10]) == [p.name for p in base]  # trace pods first
    assert order == replay.arrival_order(base, 4000, 42)
    assert order[:10] != replay.arrival_order(base, 4000, 43)[:10]


def test_arrival_order_cuts_a_trace_above_tune():
    order = replay.arrival_order(pods(100), capacity_milli=10000, seed=1)
    assert sum(p.gpu_demand for p in order) <= 13000


def test_small_replay_places_everything_that_fits():
    nodes = [tracefile.TraceNode("n0", 8000, 8192, 4, "T4"), tracefile.TraceNode("n1", 8000, 8192, 1, "P100")]
    spec = [TracePod("a", 1000, 1024, 1, 1000, ("P100",)), TracePod("b", 1000, 1024, 2, 1000),
            TracePod("c", 1000, 1024, 1, 1000, ("V100M16",))]
    result = replay.run(nodes, spec, "gpupool", seed=1, limit=3)
    assert result.placed + result.failed == 3
    assert result.failed >= 1  # the V100 pod can never fit


@pytest.mark.skipif(not DATA.is_dir(), reason="trace data not present")
def test_bench_trace_smoke_prints_one_json_object():
    out = CliRunner().invoke(bench_app, [
        "trace", "--nodes", str(DATA / "openb_node_list_gpu_node.csv"),
        "--pods", str(DATA / "openb_pod_list_default.csv"), "--policy", "fgd",
        "--seeds", "42", "--json", "--limit", "300"])
    assert out.exit_code == 0, out.output
    line = [x for x in out.stdout.splitlines() if x.startswith("{")][-1]
    data = json.loads(line)
    assert data["policy"] == "fgd" and data["seeds"] == [42]
    assert set(data["unallocated_gpu_pct"]) == {"90", "95", "100", "110", "120", "130"}
    assert data["placements_per_s"] > 0


def test_bad_csv_is_a_clear_error(tmp_path):
    nodes = tmp_path / "n.csv"
    nodes.write_text("sn,cpu_milli,memory_mib,gpu,model\nn0,lots,1,1,T4\n")
    pods_csv = tmp_path / "p.csv"
    pods_csv.write_text("name,cpu_milli,memory_mib,num_gpu,gpu_milli\np,1,1,1,100\n")
    out = CliRunner().invoke(bench_app, ["trace", "--nodes", str(nodes), "--pods", str(pods_csv)])
    assert out.exit_code == 2
    assert "line 2: column cpu_milli is not a number: 'lots'" in out.output
    with pytest.raises(tracefile.TraceError, match="missing column"):
        tracefile.load_pods(nodes)


@pytest.mark.parametrize("text, seeds", [("42-44", [42, 43, 44]), ("1,5", [1, 5]), ("7", [7])])
def test_parse_seeds(text, seeds):
    assert parse_seeds(text) == seeds


@pytest.mark.parametrize("text", ["", "9-3", "a-b"])
def test_parse_seeds_rejects_nonsense(text):
    with pytest.raises(ValueError):
        parse_seeds(text)
