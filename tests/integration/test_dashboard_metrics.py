"""Control-plane /metrics and usage history on a real database (SQLite and PostgreSQL), in-process.

The app comes from create_app with its loops running, a protocol-speaking agent registers
through the real API, and the scrape is parsed with prometheus_client's own parser.
"""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from controlplane import history
from controlplane.server import create_app
from controlplane.settings import Settings

ADMIN = "gpa_metrics_admin"
BOOT = "gpb_metrics_boot"
pytestmark = pytest.mark.timeout(60)


def _app(db_url: str, tmp_path, run_loops: bool = True):  # noqa: ANN001, ANN202
    return create_app(Settings(database_url=db_url, admin_token=ADMIN, bootstrap_token=BOOT,
                               run_loops=run_loops, scheduler_interval_s=0.1, home=tmp_path))


def _samples(text: str) -> dict[tuple, float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _value(samples: dict, name: str, **labels) -> float | None:  # noqa: ANN003
    return samples.get((name, tuple(sorted(labels.items()))))


def _register(client: TestClient, name: str, gpus: int) -> None:
    r = client.post("/api/v1/agent/register", headers={"Authorization": f"Bearer {BOOT}"}, json={
        "node": {"hostname": name, "cpu_milli": 64000, "memory_mib": 512000},
        "accelerators": [{"uuid": f"GPU-{name}-{i}", "index": i, "model": "H100-80GB",
                          "memory_mib": 81559} for i in range(gpus)]})
    assert r.status_code == 200, r.text
    token, node_id = r.json()["node_token"], r.json()["node_id"]
    now = time.time()
    hb = client.post("/api/v1/agent/heartbeat", headers={"Authorization": f"Bearer {token}"}, json={
        "node_id": node_id, "ts": now, "samples": [
            {"uuid": f"GPU-{name}-{i}", "ts": now, "gpu_util_pct": 50.0, "memory_used_mib": 1000.0}
            for i in range(gpus)]})
    assert hb.status_code == 200, hb.text


def test_metrics_report_pool_queues_jobs_and_latency(db_url, tmp_path) -> None:  # noqa: ANN001
    app = _app(db_url, tmp_path)
    admin = {"Authorization": f"Bearer {ADMIN}"}
    with TestClient(app) as client:
        _register(client, "m-node", 2)
        assert client.patch("/api/v1/queues/default", headers=admin,
                            json={"guarantee_milli": 1000}).status_code == 200
        ids = []
        for name, gpu in (("half", 0.5), ("huge", 8)):
            r = client.post("/api/v1/jobs", headers=admin, json={"name": name, "command": ["true"],
                                                                 "resources": {"gpu": gpu}})
            assert r.status_code == 201, r.text
            ids.append(r.json()["id"])
        deadline = time.monotonic() + 20
        while client.get(f"/api/v1/jobs/{ids[0]}", headers=admin).json()["status"] == "pending":
            assert time.monotonic() < deadline, "the scheduler never placed the half-GPU job"
            time.sleep(0.1)
        time.sleep(1.1)  # past the scrape cache
        r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    s = _samples(r.text)
    h100 = {"vendor": "nvidia", "model": "H100-80GB"}
    assert _value(s, "gpupool_capacity_milli", **h100) == 2000
    assert _value(s, "gpupool_allocated_milli", **h100) == 500
    assert _value(s, "gpupool_gpu_utilization_ratio", **h100) == pytest.approx(0.5)
    assert _value(s, "gpupool_queue_allocated_milli", team="default", queue="default") == 500
    assert _value(s, "gpupool_queue_quota_used_ratio", team="default", queue="default") == 0.5
    assert _value(s, "gpupool_jobs", state="pending") == 1
    pending = {k: v for k, v in s.items() if k[0] == "gpupool_pending_jobs"}
    assert sum(pending.values()) == 1 and all(dict(k[1])["reason"] != "unknown" for k in pending)
    assert _value(s, "gpupool_nodes", state="ready") == 1
    assert _value(s, "gpupool_scheduler_leader_present") == 1
    assert _value(s, "gpupool_scheduler_cycles_total") > 0
    assert _value(s, "gpupool_scheduler_placements_total") >= 1
    assert _value(s, "gpupool_job_transitions_total", to="pending") == 2
    assert _value(s, "gpupool_job_transitions_total", to="scheduled") >= 1
    # latency by route template, not raw path
    routes = {dict(k[1]).get("route") for k in s if k[0] == "gpupool_api_request_duration_seconds_count"}
    assert "/api/v1/jobs/{job_id}" in routes and f"/api/v1/jobs/{ids[0]}" not in routes
    assert _value(s, "gpupool_api_request_duration_seconds_count", method="POST",
                  route="/api/v1/jobs", code="201") == 2


def test_each_app_has_its_own_registry(db_url, tmp_path) -> None:  # noqa: ANN001
    a = _app(db_url, tmp_path, run_loops=False)
    b = _app(f"sqlite:///{tmp_path / 'second.db'}", tmp_path, run_loops=False)
    with TestClient(a) as ca, TestClient(b) as cb:
        ca.get("/healthz")
        ca.get("/healthz")
        cb.get("/healthz")
        sa, sb = _samples(ca.get("/metrics").text), _samples(cb.get("/metrics").text)
    key = dict(method="GET", route="/healthz", code="200")
    assert _value(sa, "gpupool_api_request_duration_seconds_count", **key) == 2
    assert _value(sb, "gpupool_api_request_duration_seconds_count", **key) == 1


def test_history_samples_once_per_bucket_and_prunes(db_url, tmp_path) -> None:  # noqa: ANN001
    app = _app(db_url, tmp_path, run_loops=False)
    db = app.state.db
    with TestClient(app) as client:
        _register(client, "h-node", 4)
    t0 = 1_800_000_000.0  # a minute boundary
    written = history.sample(db, t0 + 5, retention_s=3600)
    assert written == 3  # cluster, one model, one queue (default/default)
    assert history.sample(db, t0 + 30, retention_s=3600) == 0  # same minute: kept once
    assert history.sample(db, t0 + 65, retention_s=3600) == 3
    series = history.series(db, "cluster", since=t0 - 1)["all"]
    assert series["ts"] == [t0, t0 + 60] and series["capacity"] == [4.0, 4.0]
    assert series["used"] == [2.0, 2.0]  # 50 % utilisation of 4 GPUs
    model = history.series(db, "model", since=t0 - 1)
    assert list(model) == ["nvidia/H100-80GB"]
    history.sample(db, t0 + 3 * 3600, retention_s=3600)  # older than an hour is pruned
    assert history.series(db, "cluster", since=0)["all"]["ts"] == [t0 + 3 * 3600 // 60 * 60 // 1]
