"""Per-job usage, chargeback and right-sizing in-process on SQLite and PostgreSQL.

Slices get known allocation times and usage samples known values, so the report is checked
exactly: by hand for one job, and against an independent computation from the jobs' slices and
samples for every grouping. Also: an agent cannot write usage for another node's job, members see
their own team only, downsampling keeps the figures, retention deletes, a recorded GenAI pod gives
the documented recommendation. Every API answer is checked against the OpenAPI document.
"""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from controlplane.core.wire import SliceUsage
from controlplane.db.models import MemberRow, NodeRow, SliceRow
from controlplane.db.usage import JobUsageRow, rolled_up
from controlplane.loops import usage_retention
from controlplane.loops.runner import Loops
from controlplane.server import create_app
from controlplane.services import usage_buffer
from controlplane.settings import Settings
from tests.support.dashboard import sign_in
from tests.support.genai_series import pod_series
from tests.support.openapi_check import OpenApiChecker

ADMIN = "gpa_usage_admin"
BOOT = "gpb_usage_boot"
T0 = 1_789_999_200.0  # a whole hour, in the past
pytestmark = pytest.mark.timeout(120)


class Api:
    """TestClient calls as one token, every answer checked against the OpenAPI document."""

    def __init__(self, client: TestClient, token: str, checker: OpenApiChecker) -> None:
        self.client, self.headers, self.checker = client, {"Authorization": f"Bearer {token}"}, checker

    def call(self, method: str, path: str, expect: int = 200, **kw):  # noqa: ANN003, ANN201
        r = self.client.request(method, path, headers=self.headers, **kw)
        self.checker.check_response(r)
        assert r.status_code == expect, r.text
        return r.json()

    def report(self, start: float, end: float, by: str) -> dict:
        return self.call("GET", "/api/v1/reports/usage", params={"from": _iso(start), "to": _iso(end), "by": by})


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


@pytest.fixture
def pool(db_url, tmp_path):  # noqa: ANN001, ANN201
    app = create_app(Settings(database_url=db_url, admin_token=ADMIN, bootstrap_token=BOOT,
                              run_loops=False, home=tmp_path))
    with TestClient(app) as client:
        checker = OpenApiChecker(client.get("/openapi.json").json())
        admin = Api(client, ADMIN, checker)
        for team in ("research", "vision"):
            admin.call("POST", "/api/v1/teams", 201, json={"name": team})
        tokens = {}
        for user, team in (("alice", "research"), ("bob", "vision")):
            admin.call("POST", "/api/v1/users", 201, json={"name": user, "team": team, "role": "member"})
            tokens[user] = admin.call("POST", "/api/v1/tokens", 201, json={"user": user, "name": "t"})["token"]
        nodes = {}
        boot = Api(client, BOOT, checker)
        for name, gpus, model, mib in (("node-a", 2, "H100-80GB", 81920), ("node-b", 1, "A100-40GB", 40960)):
            nodes[name] = boot.call("POST", "/api/v1/agent/register", json={
                "node": {"hostname": name, "cpu_milli": 8000, "memory_mib": 64000},
                "accelerators": [{"uuid": f"GPU-{name}-{i}", "index": i, "model": model, "memory_mib": mib}
                                 for i in range(gpus)]})
        alice, bob = Api(client, tokens["alice"], checker), Api(client, tokens["bob"], checker)
        jobs = {"a1": alice.call("POST", "/api/v1/jobs", 201, json={
                    "name": "a1", "command": ["true"], "resources": {"gpu": 0.5, "models": ["H100-80GB"]}}),
                "a2": alice.call("POST", "/api/v1/jobs", 201, json={
                    "name": "a2", "command": ["true"], "resources": {"gpu": 0.25, "models": ["H100-80GB"]}}),
                "b1": bob.call("POST", "/api/v1/jobs", 201, json={
                    "name": "b1", "command": ["true"], "resources": {"gpu": 1, "models": ["A100-40GB"]}})}
        db = app.state.db
        Loops(db, app.state.settings).cycle()
        for key, job in jobs.items():
            jobs[key] = admin.call("GET", f"/api/v1/jobs/{job['id']}")
            assert jobs[key]["placement"], jobs[key]
        yield {"db": db, "admin": admin, "alice": alice, "bob": bob, "jobs": jobs, "nodes": nodes,
               "client": client}


def _slice(db, job: dict) -> dict:  # noqa: ANN001
    """The job's one slice with its member's node and attempt ids."""
    with db.read() as s:
        row = s.execute(select(SliceRow.id, SliceRow.accelerator_uuid, SliceRow.compute_milli, SliceRow.memory_mib,
                               MemberRow.node_id, MemberRow.attempt_id)
                        .join(MemberRow, MemberRow.id == SliceRow.member_id)
                        .where(MemberRow.job_id == int(job["id"]))).one()
    return row._asdict()


def _set_allocation(db, slice_id: int, start: float, end: float | None) -> None:  # noqa: ANN001
    with db.tx() as s:
        s.execute(update(SliceRow).where(SliceRow.id == slice_id).values(allocated_at=start, released_at=end))


def _usage(sl: dict, job_id: str, util: float | None, mib: float) -> SliceUsage:
    return SliceUsage(job_id=job_id, attempt_id=str(sl["attempt_id"]), accelerator_uuid=sl["accelerator_uuid"],
                      memory_used_mib=mib, sm_util_pct=util)


# samples per job: (ts offset from T0, util %, memory MiB)
SAMPLES = {
    "a1": [(35, 40.0, 1000.0), (45, 60.0, 3000.0), (70, 20.0, 2000.0), (610, 50.0, 4000.0)],
    "a2": [(300, 10.0, 500.0), (310, None, 700.0), (1830, 30.0, 800.0)],
    "b1": [(5, 100.0, 30000.0), (65, 80.0, 20000.0), (3700, 90.0, 25000.0)],
}
ALLOCATIONS = {"a1": (T0 + 30, T0 + 630), "a2": (T0 + 290, T0 + 1850), "b1": (T0 - 600, T0 + 3605)}


def _record(pool: dict) -> dict[str, dict]:
    db, slices = pool["db"], {}
    for key, job in pool["jobs"].items():
        sl = slices[key] = _slice(db, job)
        _set_allocation(db, sl["id"], *ALLOCATIONS[key])
        for dt, util, mib in SAMPLES[key]:
            usage_buffer.record(db, sl["node_id"], [_usage(sl, job["id"], util, mib)], T0 + dt)
    assert usage_buffer.flush(db, T0 + 7200, 60) == 8  # one row per (slice, minute) with samples
    return slices


def _expected(pool: dict, slices: dict, start: float, end: float) -> dict[str, dict]:
    """The documented arithmetic, computed here from the slices and the raw samples."""
    out = {}
    for key, job in pool["jobs"].items():
        sl, (a, b) = slices[key], ALLOCATIONS[key]
        alloc_s = max(0.0, min(b, end) - max(a, start))
        minutes: dict[float, list] = {}
        for dt, util, mib in SAMPLES[key]:
            minutes.setdefault(math.floor((T0 + dt) / 60) * 60, []).append((util, mib))
        used = measured = mem = 0.0
        for m, xs in minutes.items():
            secs = max(0.0, min(m + 60, b, end) - max(m, a, start))
            utils = [u for u, _ in xs if u is not None]
            if utils:
                used += secs * sum(utils) / len(utils) / 100
                measured += secs * sl["compute_milli"] / 1000
            mem += secs * sum(x for _, x in xs) / len(xs)
        out[key] = {"allocated_gpu_hours": alloc_s * sl["compute_milli"] / 1000 / 3600,
                    "allocated_memory_gib_hours": alloc_s * sl["memory_mib"] / 1024 / 3600,
                    "used_gpu_hours": used / 3600, "measured_gpu_hours": measured / 3600,
                    "used_memory_gib_hours": mem / 1024 / 3600}
    return out


GROUP_OF = {"team": {"a1": "research", "a2": "research", "b1": "vision"},
            "queue": {"a1": "research/default", "a2": "research/default", "b1": "vision/default"},
            "user": {"a1": "alice", "a2": "alice", "b1": "bob"},
            "model": {"a1": "H100-80GB", "a2": "H100-80GB", "b1": "A100-40GB"}}


def test_report_reconciles_exactly_with_slices_and_samples(pool) -> None:  # noqa: ANN001
    slices = _record(pool)
    # by hand, job a1 over [T0, T0+1h): 600 s at 0.5 GPU; used 30 s at 50 % + 60 s at 20 % + 30 s at 50 %
    a1 = pool["admin"].report(T0, T0 + 3600, "job")
    row = next(r for r in a1["rows"] if r["key"] == pool["jobs"]["a1"]["id"])
    assert row["allocated_gpu_hours"] == pytest.approx(300 / 3600, rel=1e-12)
    assert row["used_gpu_hours"] == pytest.approx((30 * 0.5 + 60 * 0.2 + 30 * 0.5) / 3600, rel=1e-12)
    assert row["unused_gpu_hours"] == pytest.approx(row["allocated_gpu_hours"] - row["used_gpu_hours"], rel=1e-12)
    for start, end in ((T0, T0 + 3600), (T0 + 45, T0 + 90), (T0 - 3600, T0 + 7200), (T0 + 1800, T0 + 3650)):
        expected = _expected(pool, slices, start, end)
        for by, groups in {**GROUP_OF, "job": {k: j["id"] for k, j in pool["jobs"].items()}}.items():
            report = pool["admin"].report(start, end, by)
            got = {r["key"]: r for r in report["rows"]}
            for key, group in groups.items():
                want = {f: sum(expected[k][f] for k, g in groups.items() if g == group) for f in expected[key]}
                if not any(want.values()):
                    assert group not in got
                    continue
                for field, value in want.items():
                    assert got[group][field] == pytest.approx(value, rel=1e-9, abs=1e-12), (by, group, field)
            for field in ("allocated_gpu_hours", "used_gpu_hours", "allocated_memory_gib_hours"):
                assert report["totals"][field] == pytest.approx(sum(e[field] for e in expected.values()),
                                                                rel=1e-9, abs=1e-12)
    timeline = pool["admin"].report(T0, T0 + 3600, "team")["timeline"]
    assert timeline["step_s"] == 60 and len(timeline["ts"]) == len(timeline["used_gpus"])
    assert sum(timeline["used_gpus"]) * 60 / 3600 == pytest.approx(
        sum(e["used_gpu_hours"] for e in _expected(pool, slices, T0, T0 + 3600).values()), rel=1e-9)


def test_members_see_their_team_and_bad_ranges_are_named(pool) -> None:  # noqa: ANN001
    _record(pool)
    alice, bob, jobs = pool["alice"], pool["bob"], pool["jobs"]
    assert [r["key"] for r in alice.report(T0 - 3600, T0 + 7200, "team")["rows"]] == ["research"]
    assert {r["key"] for r in alice.report(T0 - 3600, T0 + 7200, "user")["rows"]} == {"alice"}
    bob.call("GET", f"/api/v1/jobs/{jobs['a1']['id']}/usage", 404)
    bad = alice.call("GET", "/api/v1/reports/usage", 422, params={"from": _iso(T0), "to": _iso(T0 - 1)})
    assert "after" in bad["detail"]
    bad = alice.call("GET", "/api/v1/reports/usage", 422, params={"by": "planet"})
    assert any(e["field"].endswith("by") for e in bad["errors"])


def test_job_usage_points_summary_and_not_enough_for_a_recommendation(pool) -> None:  # noqa: ANN001
    _record(pool)
    a1 = pool["alice"].call("GET", f"/api/v1/jobs/{pool['jobs']['a1']['id']}/usage")
    (series,) = a1["slices"]
    assert series["compute_milli"] == 500 and series["model"] == "H100-80GB"
    assert [(p["samples"], p["util_mean_pct"], p["util_p95_pct"], p["memory_max_mib"]) for p in series["points"]] == [
        (2, 50.0, 60.0, 3000.0), (1, 20.0, 20.0, 2000.0), (1, 50.0, 50.0, 4000.0)]
    assert a1["summary"]["util_p95_pct"] == 60.0 and a1["summary"]["memory_peak_mib"] == 4000.0
    assert a1["summary"]["allocated_gpu_hours"] == pytest.approx(300 / 3600)
    rec = a1["recommendation"]
    assert rec["gpu"] is None and "3.0 minute(s)" in rec["reason"] and rec["current_gpu"] == 0.5
    b1 = pool["bob"].call("GET", f"/api/v1/jobs/{pool['jobs']['b1']['id']}/usage")
    assert b1["recommendation"]["current_gpu"] == 1 and b1["recommendation"]["current_gpu_memory_mib"] is None


def test_an_agent_cannot_write_another_nodes_usage(pool) -> None:  # noqa: ANN001
    db, jobs, client = pool["db"], pool["jobs"], pool["client"]
    a1, b1 = _slice(db, jobs["a1"]), _slice(db, jobs["b1"])
    with db.read() as s:
        names = dict(s.execute(select(NodeRow.id, NodeRow.name)).all())
    node = pool["nodes"][names[a1["node_id"]]]
    body = {"node_id": node["node_id"], "ts": T0, "slice_usage": [
        _usage(a1, jobs["a1"]["id"], 30.0, 100.0).model_dump(),
        _usage(b1, jobs["b1"]["id"], 99.0, 9999.0).model_dump(),  # node-b's job: not this node's
        {"job_id": "x", "attempt_id": "not-a-number", "accelerator_uuid": "GPU-x", "memory_used_mib": 1.0}]}
    r = client.post("/api/v1/agent/heartbeat", json=body, headers={"Authorization": f"Bearer {node['node_token']}"})
    assert r.status_code == 200, r.text
    assert usage_buffer.flush(db, 0, final=True) == 1
    with db.read() as s:
        rows = s.execute(select(JobUsageRow.slice_id, JobUsageRow.util_sum)).all()
    assert [(x.slice_id, x.util_sum) for x in rows] == [(a1["id"], 30.0)]


def test_hourly_roll_up_keeps_the_figures_and_retention_deletes(pool) -> None:  # noqa: ANN001
    db, job, admin = pool["db"], pool["jobs"]["a1"], pool["admin"]
    sl = _slice(db, job)
    _set_allocation(db, sl["id"], T0, T0 + 7200)
    for minute in range(120):  # two hours, one sample a minute
        usage_buffer.record(db, sl["node_id"], [_usage(sl, job["id"], float(minute % 50), 100.0 + minute)],
                            T0 + 60 * minute + 1)
    assert usage_buffer.flush(db, T0 + 7200, 60) == 120
    before = admin.report(T0, T0 + 7200, "job")["totals"]
    assert usage_retention.roll_up(db, T0 + 3600 + 60) == 0  # the first hour is not past its grace yet
    assert usage_retention.roll_up(db, T0 + 7200 + 600) == 4  # each hour: its slices, then the watermark
    with db.read() as s:
        hours = s.execute(select(JobUsageRow.resolution_s, JobUsageRow.samples, JobUsageRow.memory_max,
                                 JobUsageRow.util_p95).where(JobUsageRow.resolution_s == 3600)
                          .order_by(JobUsageRow.ts)).all()
        assert rolled_up(s) == (T0 + 7200, 0)
    assert [tuple(r) for r in hours] == [(3600, 60, 159.0, 46.0), (3600, 60, 219.0, 46.0)]

    def same_figures() -> None:
        after = admin.report(T0, T0 + 7200, "job")["totals"]
        for field in ("allocated_gpu_hours", "used_gpu_hours", "used_memory_gib_hours"):
            assert after[field] == pytest.approx(before[field], rel=1e-9), field

    same_figures()  # hourly rows now (one sample a minute: the same means)
    assert len(admin.call("GET", f"/api/v1/jobs/{job['id']}/usage")["slices"][0]["points"]) == 120
    # a late sample of a rolled-up hour merges into that hour too
    usage_buffer.record(db, sl["node_id"], [_usage(sl, job["id"], 99.0, 5000.0)], T0 + 1801)
    assert usage_buffer.flush(db, T0 + 7200, 60) == 1
    with db.read() as s:
        late = s.execute(select(JobUsageRow.samples, JobUsageRow.memory_max).where(
            JobUsageRow.resolution_s == 3600, JobUsageRow.ts == T0)).one()
    assert tuple(late) == (61, 5000.0)
    assert usage_retention.trim_minutes(db, T0 + 7200 + 86400, 86400) == 120  # the late one merged
    points = admin.call("GET", f"/api/v1/jobs/{job['id']}/usage")["slices"][0]["points"]
    assert [(p["resolution_s"], p["samples"]) for p in points] == [(3600, 61), (3600, 60)]
    assert usage_retention.trim(db, T0 + 3600 + 400 * 86400, 400 * 86400) == 1  # the first hour
    assert usage_retention.trim(db, T0 + 7200 + 400 * 86400, 400 * 86400) == 1


def test_recorded_genai_pod_gives_the_documented_recommendation(pool) -> None:  # noqa: ANN001
    """The pod's 1,441 samples, one a minute, through the buffer, the table and the API."""
    util, mem = pod_series()
    db, job = pool["db"], pool["jobs"]["a1"]
    sl = _slice(db, job)
    start = T0 - 2 * 86400
    for i, (u, m) in enumerate(zip(util, mem)):
        usage_buffer.record(db, sl["node_id"], [_usage(sl, job["id"], u, m)], start + 60 * i + 1)
    assert usage_buffer.flush(db, T0, 60) == 1441
    rec = pool["alice"].call("GET", f"/api/v1/jobs/{job['id']}/usage")["recommendation"]
    assert (rec["gpu"], rec["gpu_memory_mib"], rec["reason"]) == (0.35, 40960, None)
    assert rec["current_gpu"] == 0.5 and rec["current_gpu_memory_mib"] == 40960


def test_dashboard_job_page_and_report_page_show_the_same_figures(pool) -> None:  # noqa: ANN001
    util, mem = pod_series()
    db, job, c = pool["db"], pool["jobs"]["a1"], pool["client"]
    sl = _slice(db, job)
    for i, (u, m) in enumerate(zip(util, mem)):
        usage_buffer.record(db, sl["node_id"], [_usage(sl, job["id"], u, m)], T0 - 2 * 86400 + 60 * i + 1)
    usage_buffer.flush(db, T0, 60)
    sign_in(c, pool["alice"].headers["Authorization"].split()[1])
    page = c.get(f"/jobs/{job['id']}")
    assert page.status_code == 200
    charts = dict(re.findall(r'<script type="application/json" id="(chart-job-\w+)">(.*?)</script>', page.text))
    compute = json.loads(charts["chart-job-compute"])
    assert len(compute["ts"]) == 721  # 1,441 minutes: merged in pairs beyond 1,440 points
    assert compute["series"][0]["values"][0] == 0.5  # allocated 0.5 GPU
    assert max(compute["series"][2]["values"]) == pytest.approx(max(util) / 100, abs=1e-4)
    rightsizing = re.sub(r"\s+", " ", page.text.split('data-testid="job-rightsizing"')[1].split("</div>")[0])
    assert "0.5 GPU, 40 GiB → 0.35 GPU, 40 GiB" in rightsizing
    day = datetime.fromtimestamp(T0 - 2 * 86400, UTC).date()
    r = c.get("/reports/usage", params={"from": day.isoformat(), "to": (day + timedelta(days=2)).isoformat(),
                                        "by": "queue"})
    assert r.status_code == 200 and "research/default" in r.text and "vision" not in r.text
    csv_text = c.get("/reports/usage.csv", params={"from": day.isoformat(), "by": "queue"})
    assert csv_text.headers["content-type"].startswith("text/csv")
    assert "attachment" in csv_text.headers["content-disposition"]
    header, row = csv_text.text.splitlines()
    assert header.startswith("queue,jobs,allocated_gpu_hours,used_gpu_hours") and row.startswith("research/default,")
    bad = c.get("/reports/usage", params={"from": "yesterday"})
    assert bad.status_code == 422 and "must be a date" in bad.text
