"""Decisions an admin can replay: the server dumps what the scheduler would decide now (and the
input of any cycle that fails), and `gpupool bench replay` reproduces it exactly."""

from __future__ import annotations

import json
import uuid

from typer.testing import CliRunner

from controlplane.cli.bench import bench_app
from controlplane.core.snapshot import Snapshot
from controlplane.db import migrate
from controlplane.db.database import Database
from controlplane.loops import runner
from controlplane.loops.runner import Loops
from controlplane.scheduler import dump
from controlplane.settings import Settings
from tests.support.cli import admin_cli
from tests.support.factories import make_job, make_node
from tests.support.fake_agent import FakeAgent
from tests.support.fixtures import server_fixture

server = server_fixture()


def test_an_admin_dump_replays_exactly(server, tmp_path, monkeypatch) -> None:  # noqa: ANN001
    model = f"D-{uuid.uuid4().hex[:6]}"
    agent = FakeAgent(server.url, server.bootstrap_token, f"dump-{model.lower()}", gpus=2, model=model)
    agent.register()
    with server.client() as c:
        for i in range(3):  # more than fits: some placed, one pending with its reason
            c.post("/api/v1/jobs", json={"name": f"d{i}", "command": ["true"],
                                         "resources": {"gpu": 1, "models": [model]}})
        answer = c.get("/api/v1/scheduler/dump")
        assert answer.status_code == 200
        member = c.post("/api/v1/users", json={"name": f"u{model.lower()}", "team": "default"}).json()
        token = c.post("/api/v1/tokens", json={"user": member["name"]}).json()["token"]
    with server.client(token) as c:
        assert c.get("/api/v1/scheduler/dump").status_code == 403  # admins only
    assert answer.json()["decision"]["pending"]  # the third job waits, with its reason
    path = tmp_path / "cycle.json"
    code, out, _ = admin_cli(server, monkeypatch, tmp_path)("admin", "scheduler", "dump", "-o", str(path))
    assert code == 0 and "gpupool bench replay" in out
    result = CliRunner().invoke(bench_app, ["replay", str(path)])
    assert result.exit_code == 0 and "identical" in result.output, result.output
    agent.close()


def test_a_failing_cycle_leaves_its_input_behind(db_url, tmp_path, monkeypatch) -> None:  # noqa: ANN001
    migrate.upgrade(db_url)
    db = Database(db_url)
    try:
        make_node(db, "n1", gpus=1)
        make_job(db, "boom", 0.5)

        def broken(snapshot: Snapshot, config):  # noqa: ANN001, ANN202
            raise RuntimeError("a scheduler bug")

        monkeypatch.setattr(runner, "schedule", broken)
        loops = Loops(db, Settings(home=tmp_path, run_loops=False))
        try:
            loops.cycle()
        except RuntimeError:
            pass
        (written,) = (tmp_path / "dumps").glob("cycle-*.json")
        snap, _, decision = dump.load_dump(json.loads(written.read_text()))
        assert [j.job_id for j in snap.pending] and decision is None
    finally:
        db.dispose()
