"""Dashboard pages in-process on a real database: sign-in, member vs admin, writes, bad input.

Browser behaviour (htmx, charts, screenshots) is covered by tests/e2e; this checks the server
side of every page quickly on SQLite and PostgreSQL.
"""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from controlplane.loops.runner import Loops
from controlplane.server import create_app
from controlplane.settings import Settings
from tests.support.dashboard import post_form, sign_in

ADMIN = "gpa_pages_admin"
BOOT = "gpb_pages_boot"
pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def site(db_url, tmp_path):  # noqa: ANN001, ANN201
    app = create_app(Settings(database_url=db_url, admin_token=ADMIN, bootstrap_token=BOOT,
                              run_loops=False, home=tmp_path))
    with TestClient(app) as client:
        api = {"Authorization": f"Bearer {ADMIN}"}
        assert client.post("/api/v1/teams", headers=api, json={"name": "research"}).status_code == 201
        assert client.post("/api/v1/users", headers=api,
                           json={"name": "alice", "team": "research", "role": "member"}).status_code == 201
        alice = client.post("/api/v1/tokens", headers=api, json={"user": "alice", "name": "t"}).json()["token"]
        r = client.post("/api/v1/agent/register", headers={"Authorization": f"Bearer {BOOT}"}, json={
            "node": {"hostname": "node-a", "cpu_milli": 8000, "memory_mib": 64000},
            "accelerators": [{"uuid": "GPU-a-0", "index": 0, "model": "H100-80GB", "memory_mib": 81559}]})
        assert r.status_code == 200, r.text
        admin_job = client.post("/api/v1/jobs", headers=api, json={
            "name": "admin-job", "command": ["true"], "resources": {"gpu": 1}}).json()["id"]
        alice_job = client.post("/api/v1/jobs", headers={"Authorization": f"Bearer {alice}"}, json={
            "name": "alice-job", "command": ["true"], "resources": {"gpu": 0.5}}).json()["id"]
        yield {"client": client, "alice": alice, "admin_job": admin_job, "alice_job": alice_job}


def _login(client: TestClient, token: str) -> None:
    client.cookies.clear()
    r = sign_in(client, token, "/jobs")
    assert r.status_code == 303 and r.headers["location"] == "/jobs", r.text
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    assert client.cookies.get("gpupool_session") not in (None, token)  # a session id, not the token


def test_sign_in_required_and_bad_tokens_refused(site) -> None:  # noqa: ANN001
    c = site["client"]
    c.cookies.clear()
    r = c.get("/jobs?status=pending", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login?next=/jobs%3Fstatus%3Dpending"
    assert sign_in(c, "nope").status_code == 401
    assert sign_in(c, "").status_code == 422
    agent = sign_in(c, BOOT)
    assert agent.status_code == 403 and "agent" in agent.text
    for evil in ("//evil.example/x", "/\\evil.example/x"):
        r = sign_in(c, ADMIN, evil)
        assert r.headers["location"] == "/"  # no open redirect
    c.cookies.clear()
    c.cookies.set("gpupool_session", "forged")
    assert c.get("/", follow_redirects=False).status_code == 303
    assert c.get("/metrics").status_code == 200  # /metrics needs no sign-in


def test_member_sees_own_team_only_and_no_admin_pages(site) -> None:  # noqa: ANN001
    c = site["client"]
    app = c.app
    Loops(app.state.db, app.state.settings).cycle()  # one scheduling cycle: admin-job takes the GPU
    _login(c, site["alice"])
    nodes = c.get("/nodes").text
    assert "H100-80GB" in nodes and "admin-job" not in nodes  # another team's slice, name hidden
    jobs = c.get("/jobs").text
    assert "alice-job" in jobs and "admin-job" not in jobs
    assert c.get(f"/jobs/{site['admin_job']}").status_code == 404
    page = c.get(f"/jobs/{site['alice_job']}")
    assert page.status_code == 200 and "Why is this job pending?" in page.text
    overview = c.get("/")
    assert overview.status_code == 200 and "research/default" in overview.text
    assert "default/default" not in overview.text
    for path in ("/admin", "/queues/research/default/edit"):
        r = c.get(path)
        assert r.status_code == 403 and "administrators" in r.text
    job_page = f"/jobs/{site['alice_job']}"
    assert post_form(c, job_page, "/queues/research/default", {"guarantee": "4"}).status_code == 403
    assert post_form(c, job_page, "/nodes/node-a/cordon").status_code == 403
    assert "Users &amp; tokens" not in c.get("/queues").text
    r = post_form(c, job_page, f"/jobs/{site['alice_job']}/cancel", follow_redirects=False)
    assert r.status_code == 303
    assert "cancelled" in c.get(job_page).text
    assert post_form(c, "/jobs", f"/jobs/{site['alice_job']}/cancel").status_code == 409  # already final


def test_admin_pages_and_writes(site) -> None:  # noqa: ANN001
    c = site["client"]
    _login(c, ADMIN)
    for path in ("/", "/nodes", "/nodes/node-a", "/jobs", "/jobs?status=pending&team=research",
                 f"/jobs/{site['alice_job']}", "/queues", "/events", "/admin",
                 "/queues/research/default/edit"):
        r = c.get(path)
        assert r.status_code == 200, (path, r.text[:300])
    Loops(c.app.state.db, c.app.state.settings).cycle()
    assert "admin-job" in c.get("/nodes").text  # admins see every slice's job
    assert "alice-job" in c.get("/jobs?team=research").text
    assert "admin-job" not in c.get("/jobs?team=research").text
    r = post_form(c, "/nodes/node-a", "/nodes/node-a/cordon", follow_redirects=False)
    assert r.status_code == 303
    assert "cordoned" in c.get("/nodes/node-a").text
    assert c.get("/api/v1/nodes/node-a", headers={"Authorization": f"Bearer {ADMIN}"}).json()["cordoned"]
    assert post_form(c, "/nodes/node-a", "/nodes/node-a/reboot").status_code == 404
    edit = "/queues/research/default/edit"
    bad = post_form(c, edit, "/queues/research/default", {"guarantee": "lots", "limit": ""})
    assert bad.status_code == 422 and "guarantee" in bad.text
    below = post_form(c, edit, "/queues/research/default", {"guarantee": "4", "limit": "2"})
    assert below.status_code == 422 and "limit_milli" in below.text
    ok = post_form(c, edit, "/queues/research/default", {"guarantee": "1.5", "limit": "4", "weight": "2"},
                   follow_redirects=False)
    assert ok.status_code == 303
    queues = c.get("/api/v1/queues", headers={"Authorization": f"Bearer {ADMIN}"}).json()["items"]
    q = next(q for q in queues if q["team"] == "research" and q["name"] == "default")
    assert (q["guarantee_milli"], q["limit_milli"], q["weight"]) == (1500, 4000, 2.0)
    assert "queue_updated" in c.get("/events").text


def test_bad_query_parameters_get_pages_not_tracebacks(site) -> None:  # noqa: ANN001
    c = site["client"]
    _login(c, ADMIN)
    for path, status in (("/nodes?page=abc", 422), ("/nodes?state=melting", 422),
                         ("/jobs?status=bogus", 422), ("/jobs?cursor=xyz", 422),
                         ("/jobs/not-a-number", 404), ("/nodes/nope", 404), ("/events?job=999999", 404)):
        r = c.get(path)
        assert r.status_code == status, (path, r.status_code)
        assert "text/html" in r.headers["content-type"] and "Traceback" not in r.text
    assert c.get("/nodes?page=99999").status_code == 200  # clamps to the last page
    assert c.get("/static/../../settings.py").status_code == 404
    assert c.get("/static/vendor/htmx/htmx.min.js").status_code == 200
