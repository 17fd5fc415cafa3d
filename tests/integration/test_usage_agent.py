"""Usage end to end: a real server process (SQLite and PostgreSQL) and a real agent on simulated
GPUs. A member's job's per-slice use reaches the server through heartbeats and shows in the API,
the job page, the report and the CLI; the agent's Prometheus slice series carry the server's
team/queue/user even though the job sets GPUPOOL_TEAM & co. in its environment; `gpupool submit
--like` shows the right-sized change, asks, and submits it (or not).
"""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime

import httpx
import pytest
from typer.testing import CliRunner

from controlplane.cli.main import app as cli_app
from controlplane.core.wire import SliceUsage
from controlplane.db.database import Database
from controlplane.services import usage_buffer
from tests.integration.e2e_agent_support import AgentProc, py_job, wait_file_code, wait_until
from tests.support.dashboard import sign_in
from tests.support.fixtures import server_fixture
from tests.support.genai_series import pod_series

pytestmark = [pytest.mark.timeout(240)]
server = server_fixture({"GPUPOOL_USAGE_BUCKET_S": "1", "GPUPOOL_HEARTBEAT_INTERVAL_S": "0.5"})
FORGED = {"GPUPOOL_TEAM": "evil", "GPUPOOL_QUEUE": "evil", "GPUPOOL_USER": "mallory"}


@pytest.fixture(scope="module")
def pool(server, tmp_path_factory):  # noqa: ANN001, ANN201
    with server.client() as admin:
        assert admin.post("/api/v1/teams", json={"name": "research"}).status_code == 201
        assert admin.post("/api/v1/users", json={"name": "alice", "team": "research", "role": "member"}).status_code == 201
        token = admin.post("/api/v1/tokens", json={"user": "alice", "name": "t"}).json()["token"]
    root = tmp_path_factory.mktemp("usage-agent")
    agent = AgentProc(server.url, server.bootstrap_token, root, f"usage-{root.name[-6:]}", gpus="1x1xH100-80GB")
    try:
        agent.start().wait_connected()
        with server.client(token) as alice:
            yield {"server": server, "agent": agent, "alice": alice, "token": token, "root": root}
    finally:
        agent.stop()
        agent.reap_jobs()


def _scrape(agent: AgentProc) -> str:
    return httpx.get(f"http://127.0.0.1:{agent.port}/metrics", timeout=5).text


def test_usage_reaches_api_job_page_report_and_labels(pool) -> None:  # noqa: ANN001
    alice, agent = pool["alice"], pool["agent"]
    release = agent.jobs_dir / "release-usage"  # a directory the job's own uid can search
    code = ("import os\nopen(os.environ['GPUPOOL_SIM_MEMORY_FILE'], 'w').write('9000')\n"
            + wait_file_code(release))
    r = alice.post("/api/v1/jobs", json=py_job("usage-job", code, gpu=0.25, env=FORGED))
    assert r.status_code == 201, r.text
    job_id = r.json()["id"]

    def measured() -> dict | None:
        usage = alice.get(f"/api/v1/jobs/{job_id}/usage").json()
        points = [p for s in usage["slices"] for p in s["points"] if p["memory_max_mib"] >= 9000]
        return usage if len(points) >= 3 else None

    usage = wait_until(measured, 90, "three stored buckets of the job's usage")
    (series,) = usage["slices"]
    assert series["compute_milli"] == 250 and series["node"] == agent.name
    busy = [p for p in series["points"] if p["memory_max_mib"] >= 9000]
    assert all(p["util_mean_pct"] == pytest.approx(25.0) for p in busy)  # a quarter GPU, busy
    # before the job writes its figure the simulator says 60 % of the slice (12,234 MiB)
    assert usage["summary"]["memory_peak_mib"] in (9000.0, pytest.approx(0.6 * 0.25 * 81559, abs=1))
    assert "minute(s) of usage so far" in usage["recommendation"]["reason"]

    metrics = _scrape(agent)
    line = next(x for x in metrics.splitlines()
                if x.startswith("gpupool_slice_sm_util_pct{") and f'job="{job_id}"' in x)
    assert 'team="research"' in line and 'queue="default"' in line and 'user="alice"' in line, line
    assert "evil" not in metrics and "mallory" not in metrics

    with httpx.Client(base_url=pool["server"].url, timeout=15) as browser:
        assert sign_in(browser, pool["token"], f"/jobs/{job_id}").status_code == 303
        page = browser.get(f"/jobs/{job_id}").text
    chart = json.loads(re.search(r'id="chart-job-memory">(.*?)</script>', page).group(1))
    assert chart["ts"] and pytest.approx(9000 / 1024, abs=1e-3) in chart["series"][2]["values"]

    release.write_text("go")
    wait_until(lambda: alice.get(f"/api/v1/jobs/{job_id}").json()["status"] == "succeeded", 60, "job done")
    since = datetime.fromtimestamp(time.time() - 3600, UTC).isoformat()

    def agree() -> bool:  # the job's summary and its report row (the last buckets may land late)
        summary = alice.get(f"/api/v1/jobs/{job_id}/usage").json()["summary"]
        report = alice.get("/api/v1/reports/usage", params={"from": since, "by": "job"}).json()
        row = next(r for r in report["rows"] if r["key"] == job_id)
        return all(row[f] == pytest.approx(summary[f], rel=1e-9) and row[f] > 0
                   for f in ("allocated_gpu_hours", "used_gpu_hours", "used_memory_gib_hours"))

    wait_until(agree, 30, "the job's usage summary equal to its row of the report")
    by_user = alice.get("/api/v1/reports/usage", params={"by": "user"}).json()
    assert [r["key"] for r in by_user["rows"]] == ["alice"]


def _cli(pool: dict, *args: str, stdin: str | None = None) -> tuple[int, str, str]:
    env = {"GPUPOOL_SERVER": pool["server"].url, "GPUPOOL_TOKEN": pool["token"], "COLUMNS": "200",
           "GPUPOOL_HOME": str(pool["root"]), "GPUPOOL_CONFIG": str(pool["root"] / "none.yaml")}
    result = CliRunner().invoke(cli_app, list(args), env=env, input=stdin, catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_cli_report_and_submit_like(pool) -> None:  # noqa: ANN001
    alice = pool["alice"]
    job = alice.post("/api/v1/jobs", json=py_job("to-resize", "print('done')", gpu=0.5)).json()
    done = wait_until(lambda: (j := alice.get(f"/api/v1/jobs/{job['id']}").json())["status"] == "succeeded" and j,
                      60, "job done")
    code, out, err = _cli(pool, "submit", "--like", job["id"])
    assert code == 1 and "minute(s) of usage so far" in err and "Traceback" not in err

    # a day of one recorded GenAI pod's use, written to the server's database as the server would
    util, mem = pod_series()
    db = Database(pool["server"].db_url)
    try:
        uuid = done["placement"][0]["slices"][0]["accelerator_uuid"]
        node_id, attempt = _member_of(db, int(job["id"]))
        start = time.time() - 3 * 86400
        for i, (u, m) in enumerate(zip(util, mem)):
            usage_buffer.record(db, node_id, [SliceUsage(job_id=job["id"], attempt_id=str(attempt),
                                                         accelerator_uuid=uuid, memory_used_mib=m, sm_util_pct=u)],
                                start + 60 * i)
        assert usage_buffer.flush(db, time.time(), 60) == 1441
    finally:
        db.dispose()

    code, out, _ = _cli(pool, "submit", "--like", job["id"], stdin="n\n")
    assert code == 1 and "0.5 GPU, 39.8 GiB -> 0.35 GPU, 40 GiB" in out and "p95 compute 26.4%" in out
    code, out, _ = _cli(pool, "submit", "--like", job["id"], "--yes", "--quiet")
    assert code == 0, out
    new = alice.get(f"/api/v1/jobs/{out.strip().splitlines()[-1]}").json()
    assert new["name"] == "to-resize" and new["request"]["gpu"] == 0.35
    assert new["request"]["gpu_memory_mib"] == 40960 and new["spec"]["command"] == done["spec"]["command"]
    alice.post(f"/api/v1/jobs/{new['id']}/cancel")

    code, out, _ = _cli(pool, "report", "usage", "--from", "4d", "--by", "user", "--format", "csv")
    assert code == 0 and out.splitlines()[0].startswith("user,jobs,allocated_gpu_hours")
    assert any(x.startswith("alice,") for x in out.splitlines())
    code, out, _ = _cli(pool, "report", "usage", "--from", "4d", "--format", "json")
    assert code == 0 and json.loads(out)["rows"][0]["key"] == "research"
    code, out, _ = _cli(pool, "report", "usage", "--from", "4d")
    assert code == 0 and "research" in out and "USED GPU-H" in out
    code, _, err = _cli(pool, "report", "usage", "--from", "last tuesday")
    assert code == 1 and "cannot read the time 'last tuesday'" in err


def _member_of(db: Database, job_id: int) -> tuple[int, int]:
    from sqlalchemy import select

    from controlplane.db.models import MemberRow

    with db.read() as s:
        row = s.execute(select(MemberRow.node_id, MemberRow.attempt_id).where(MemberRow.job_id == job_id)).one()
    return row[0], row[1]
