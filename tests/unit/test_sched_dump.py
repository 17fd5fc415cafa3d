"""Scheduler dumps: a recorded decision (gangs, preemptions, reservations, every pending reason)
replays exactly from its JSON, and `gpupool bench replay` says so or lists the differences."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from typer.testing import CliRunner

from controlplane.cli.bench import bench_app
from controlplane.core.snapshot import Snapshot
from controlplane.scheduler import SchedulerConfig, dump, schedule
from controlplane.scheduler.frag import TaskShape
from controlplane.scheduler.factories import node, pending, queue, running


def busy_snapshot() -> Snapshot:
    """A cycle that places a gang, reclaims for a job, reserves with an expected start,
    backfills a short job and explains quota, constraint and capacity waits."""
    n1, n2, n3 = node("n1", domains=2), node("n2"), node("n3", model="A100-80GB")
    n4 = node("n4")  # the gang's members each take a node of their own (n2 and n4)
    runs = [running("b1", n1, "team-b", gpus=8, started_at=0),
            replace(running("a0", n3, "team-a", gpus=4, started_at=100), max_runtime_s=900)]
    jobs = [pending("gang", "team-a", gpus=4, gang=2, models=("H100-80GB",)),
            pending("big", "team-a", gpus=8),
            replace(pending("head", "team-c", gpus=8, models=("A100-80GB",)), max_runtime_s=60),
            replace(pending("short", "team-c", gpus=1, models=("A100-80GB",)), max_runtime_s=300),
            replace(pending("long", "team-c", gpus=1, models=("A100-80GB",)), max_runtime_s=900),
            pending("t4", "team-c", gpus=1, models=("T4",)), pending("over", "team-d", gpus=3)]
    queues = [queue("team-a", guarantee_gpus=24), queue("team-b"), queue("team-c"),
              replace(queue("team-d", limit_gpus=2), memory_guarantee_mib=4096, memory_limit_mib=8192)]
    return Snapshot([n1, n2, n3, n4], queues, jobs, runs, now=500.0)


CONFIG = SchedulerConfig(policy="gpupool", max_reservations=3,
                         workload=(TaskShape(1000, 1, 1000, (), 1024), TaskShape(1000, 8, 1000)))


def write_dump(tmp_path, decision=None, config=CONFIG):
    snap = busy_snapshot()
    recorded = decision if decision is not None else schedule(snap, config)
    path = tmp_path / "cycle.json"
    path.write_text(json.dumps(dump.dump_snapshot(snap, config, recorded)))
    return path, snap, recorded


def test_a_dumped_decision_replays_exactly(tmp_path):
    path, dumped, recorded = write_dump(tmp_path)
    # the scenario covers what a replay must reproduce
    assert {p.job_id: len(p.members) for p in recorded.placements} == {"gang": 2, "big": 1, "short": 1}
    assert [p.job_id for p in recorded.preemptions] == ["b1"]
    assert recorded.pending["head"].expected_start == 1000.0
    assert {str(r.code) for r in recorded.pending.values()} >= {"capacity", "quota", "constraints"}
    snap, config, again = dump.load_dump(json.loads(path.read_text()))
    assert snap == dumped and config == CONFIG and again == recorded
    replayed = schedule(snap, config)
    assert replayed == recorded
    assert dump.decision_to_json(replayed) == dump.decision_to_json(recorded)
    out = CliRunner().invoke(bench_app, ["replay", str(path)])
    assert out.exit_code == 0, out.output
    assert "placed 3, preempted 1, pending 4 (capacity 2, constraints 1, quota 1)" in out.output
    assert "identical to the recorded decision" in out.output


def test_replay_lists_differences_and_fails(tmp_path):
    snap = busy_snapshot()
    recorded = schedule(snap, CONFIG)
    moved = replace(recorded.placements[0], members=tuple(
        replace(m, node="n9") for m in recorded.placements[0].members))
    tampered = replace(recorded, placements=[moved, *recorded.placements[1:]],
                       pending={k: v for k, v in recorded.pending.items() if k != "t4"})
    path, _, _ = write_dump(tmp_path, tampered)
    out = CliRunner().invoke(bench_app, ["replay", str(path)])
    assert out.exit_code == 1
    assert "differs from the recorded decision" in out.output
    assert "placements: job gang: recorded" in out.output and "'node': 'n9'" in out.output
    assert "pending: job t4: recorded None" in out.output


def test_a_dump_without_a_decision_just_replays(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps(dump.dump_snapshot(busy_snapshot(), SchedulerConfig())))
    out = CliRunner().invoke(bench_app, ["replay", str(path)])
    assert out.exit_code == 0 and "no recorded decision" in out.output


@pytest.mark.parametrize("text, message", [
    ("not json", "Expecting value"),
    ('{"format": "other"}', "not a scheduler dump: format is 'other'"),
    ('{"format": "gpupool-scheduler-dump/1", "snapshot": {"now": 0, "nodes": [{"name": "n"}]}}',
     "snapshot.nodes[0]: missing 'cpu_milli'"),
])
def test_a_bad_dump_is_a_clear_error(tmp_path, text, message):
    path = tmp_path / "bad.json"
    path.write_text(text)
    out = CliRunner().invoke(bench_app, ["replay", str(path)])
    assert out.exit_code == 2
    assert message in out.output
