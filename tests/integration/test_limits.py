"""Limits a shared control plane needs: body size before auth, per-token rate limits, a cap on a
queue's pending jobs, bounded log followers, idempotency keys bound to their body, specs that
cannot start refused at submit, and queues' policies for members."""

from __future__ import annotations

import socket
import uuid

import httpx
import pytest
from sqlalchemy import select, update

from controlplane.db.database import Database
from controlplane.db.models import QueueRow, TeamRow
from tests.support.fixtures import server_fixture

server = server_fixture({"GPUPOOL_MAX_BODY_BYTES": "65536", "GPUPOOL_RATE_LIMIT_PER_S": "2",
                         "GPUPOOL_RATE_LIMIT_BURST": "20", "GPUPOOL_MAX_PENDING_PER_QUEUE": "4",
                         "GPUPOOL_MAX_LOG_FOLLOWERS": "1"})


def _member(server, team: str | None = None) -> str:  # noqa: ANN001
    """A member token in a fresh team (its own queues, its own rate budget)."""
    team = team or f"t{uuid.uuid4().hex[:8]}"
    with server.client() as admin:
        assert admin.post("/api/v1/teams", json={"name": team}).status_code == 201
        assert admin.post("/api/v1/users", json={"name": f"{team}-u", "team": team}).status_code == 201
        return admin.post("/api/v1/tokens", json={"user": f"{team}-u", "name": "t"}).json()["token"]


def job(name: str, **extra) -> dict:  # noqa: ANN003
    return {"name": name, "command": ["true"], "resources": {"gpu": 0.1}, **extra}


def test_large_bodies_are_refused_before_anything_reads_them(server) -> None:  # noqa: ANN001
    r = httpx.post(f"{server.url}/api/v1/jobs", content=b"x" * 70_000,
                   headers={"Content-Type": "application/json"})  # no token at all
    assert r.status_code == 413 and r.headers["content-type"].startswith("application/problem+json")
    assert "65536" in r.json()["detail"]

    def chunks():  # noqa: ANN202 - no Content-Length: counted as it arrives
        for _ in range(10):
            yield b"y" * 10_000

    r = httpx.post(f"{server.url}/api/v1/jobs", content=chunks(), headers=server.headers())
    assert r.status_code == 413


def test_a_lying_content_length_cannot_slip_past(server) -> None:  # noqa: ANN001
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n"
                     b"Content-Type: application/json\r\n\r\n{}")
        head = sock.recv(4096).decode(errors="replace")
    assert head.startswith("HTTP/1.1 413")


def test_members_are_rate_limited_with_retry_after(server) -> None:  # noqa: ANN001
    token = _member(server)
    with server.client(token) as c:
        codes = [c.get("/api/v1/jobs").status_code for _ in range(40)]
        assert codes[0] == 200 and 429 in codes
        r = next(r for r in (c.get("/api/v1/jobs") for _ in range(5)) if r.status_code == 429)
        assert int(r.headers["Retry-After"]) >= 1 and "rate limit" in r.json()["detail"]
    with server.client() as admin:  # admins are exempt
        assert all(admin.get("/api/v1/jobs").status_code == 200 for _ in range(40))


def test_a_queue_holds_at_most_its_cap_of_pending_jobs(server) -> None:  # noqa: ANN001
    team = f"cap{uuid.uuid4().hex[:6]}"
    token = _member(server, team)
    with server.client(token) as c:
        codes = [c.post("/api/v1/jobs", json=job(f"p{i}")).status_code for i in range(6)]
    assert codes[:4] == [201] * 4 and codes[4:] == [429, 429]


def test_idempotency_key_is_bound_to_its_body(server) -> None:  # noqa: ANN001
    key = {"Idempotency-Key": uuid.uuid4().hex}
    with server.client() as c:
        first = c.post("/api/v1/jobs", json=job("idem"), headers=key)
        again = c.post("/api/v1/jobs", json=job("idem"), headers=key)
        other = c.post("/api/v1/jobs", json=job("other"), headers=key)
    assert (first.status_code, again.status_code) == (201, 200) and first.json()["id"] == again.json()["id"]
    assert other.status_code == 422 and "Idempotency-Key" in other.json()["detail"]
    assert f"job {first.json()['id']}" in other.json()["detail"]


@pytest.mark.parametrize(("extra", "field"), [
    ({"env": {"A": "x\u0000y"}}, "env.A"),
    ({"env": {"A=B": "x"}}, "env"),
    ({"command": ["echo", "a\u0000b"]}, "command.1"),
])
def test_specs_that_cannot_start_are_refused_at_submit(server, extra: dict, field: str) -> None:  # noqa: ANN001
    with server.client() as c:
        r = c.post("/api/v1/jobs", json=job("nul", **extra))
    assert r.status_code == 422 and r.json()["errors"][0]["field"].startswith(field), r.json()


def test_queue_policy_binds_members_not_admins(server) -> None:  # noqa: ANN001
    team = f"pol{uuid.uuid4().hex[:6]}"
    token = _member(server, team)
    db = Database(server.db_url)
    try:
        with db.tx() as s:
            team_id = select(TeamRow.id).where(TeamRow.name == team).scalar_subquery()
            s.execute(update(QueueRow).where(QueueRow.name == "default", QueueRow.team_id == team_id)
                      .values(max_priority=0, allow_non_preemptible=False, max_min_runtime_s=60))
    finally:
        db.dispose()
    with server.client(token) as c:
        for extra, field, words in [({"priority": "critical"}, "priority", "up to 0"),
                                    ({"preemptible": False}, "preemptible", "non-preemptible"),
                                    ({"min_runtime_s": 3600}, "min_runtime_s", "up to 60")]:
            r = c.post("/api/v1/jobs", json=job("p", **extra))
            assert r.status_code == 422, r.text
            assert r.json()["errors"][0]["field"] == field and words in r.json()["detail"]
            assert f"{team}/default" in r.json()["detail"]
        assert c.post("/api/v1/jobs", json=job("ok", priority="normal", min_runtime_s=30)).status_code == 201
    with server.client() as admin:
        assert admin.post("/api/v1/jobs", json={**job("adm", priority="critical"), "team": team}).status_code == 201


def test_log_followers_are_bounded(server) -> None:  # noqa: ANN001
    with server.client() as c:
        job_id = c.post("/api/v1/jobs", json=job("follow")).json()["id"]
        with c.stream("GET", f"/api/v1/jobs/{job_id}/logs", params={"follow": True}) as first:
            assert first.status_code == 200
            second = c.get(f"/api/v1/jobs/{job_id}/logs", params={"follow": True})
            assert second.status_code == 429 and "Retry-After" in second.headers
        c.post(f"/api/v1/jobs/{job_id}/cancel")
