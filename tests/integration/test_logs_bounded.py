"""Logs that stay bounded and safe: NUL bytes and invalid text stored on both databases without
blocking other chunks, a per-stream cap that keeps the head and the newest output with a marker,
tails that read only the tail, and retention of old logs and events."""

from __future__ import annotations

import json

from sqlalchemy import func, select, update

from controlplane.db.database import Database
from controlplane.db.models import AttemptRow, EventRow, LogChunkRow
from controlplane.loops import retention
from tests.support.fake_agent import running_job
from tests.support.fixtures import server_fixture

server = server_fixture({"GPUPOOL_LOG_MAX_BYTES": "8192", "GPUPOOL_LOG_HEAD_BYTES": "1024"})


def test_nul_and_invalid_text_are_stored_and_do_not_block_other_chunks(server) -> None:  # noqa: ANN001
    with server.client() as c:
        agent, job_id, attempt = running_job(server, c, {"name": "logs", "command": ["true"]}, gpu=0.5)
        body = {"node_id": agent.node_id, "chunks": [
            {"job_id": job_id, "attempt_id": attempt, "offset": 0, "data": "a\u0000b\n"},
            {"job_id": job_id, "attempt_id": attempt, "offset": 4, "data": "lone \ud800 surrogate\n"},
            {"job_id": job_id, "attempt_id": attempt, "offset": 30, "data": "GPUPOOL_PROGRESS {\"n\": \"x\\u0000\"}\n"},
            {"job_id": job_id, "attempt_id": attempt, "offset": 80, "data": "after\n"}]}
        raw = json.dumps(body)  # ASCII-escaped, so the lone surrogate travels as JSON allows
        headers = {"Content-Type": "application/json"}
        r = agent.http.post("/api/v1/agent/logs", content=raw, headers=headers)
        assert r.status_code == 200 and r.json()["accepted"] == 4, r.text
        text = c.get(f"/api/v1/jobs/{job_id}/logs").text
        assert "a\ufffdb" in text and "surrogate" in text and text.endswith("after\n")
        assert c.get(f"/api/v1/jobs/{job_id}").json()["progress"] == {"n": "x\ufffd"}
        assert agent.http.post("/api/v1/agent/logs", content=raw, headers=headers).json()["accepted"] == 0
    agent.close()


def test_a_stream_keeps_its_head_and_newest_output_within_the_cap(server) -> None:  # noqa: ANN001
    with server.client() as c:
        agent, job_id, attempt = running_job(server, c, {"name": "logs", "command": ["true"]}, gpu=0.5)
        line = "x" * 99 + "\n"
        for start in range(0, 100, 10):  # 100 lines of 100 bytes = 10,000 bytes > the 8,192 cap
            chunks = [{"job_id": job_id, "attempt_id": attempt, "offset": (start + i) * 100,
                       "data": f"{start + i:03d}{line[3:]}"} for i in range(10)]
            assert agent.http.post("/api/v1/agent/logs", json={"node_id": agent.node_id, "chunks": chunks}).status_code == 200
        text = c.get(f"/api/v1/jobs/{job_id}/logs").text
        assert text.startswith("000") and text.endswith(f"099{line[3:]}")  # the head and the newest kept
        assert "bytes of stdout not kept (log cap)" in text and "\n020" not in text and "\n050" in text
        assert len(text.encode()) < 8192 + 200
        assert c.get(f"/api/v1/jobs/{job_id}/logs", params={"tail": 2}).text == f"098{line[3:]}099{line[3:]}"
    agent.close()


def test_old_logs_and_events_are_deleted(server) -> None:  # noqa: ANN001
    with server.client() as c:
        agent, job_id, attempt = running_job(server, c, {"name": "logs", "command": ["true"]}, gpu=0.5)
        agent.log(job_id, attempt, 0, "old output\n")
        agent.step()  # the attempt ends
        agent.close()
    db = Database(server.db_url)
    try:
        with db.tx() as s:
            s.execute(update(AttemptRow).where(AttemptRow.id == int(attempt)).values(finished_at=1.0))
            s.execute(update(EventRow).where(EventRow.job_id == int(job_id)).values(ts=1.0))
        assert retention.trim_logs(db, older_than_s=86400) >= 1
        assert retention.trim_events(db, older_than_s=86400) >= 1
        with db.read() as s:
            assert s.scalar(select(func.count()).select_from(LogChunkRow)
                            .where(LogChunkRow.attempt_id == int(attempt))) == 0
            assert s.scalar(select(func.count()).select_from(EventRow)
                            .where(EventRow.job_id == int(job_id))) == 0
    finally:
        db.dispose()
