"""Hostile names and job output in the real browser: no script runs, nothing is even injected.

Chromium (Playwright) against a real server and agent. Nodes are named with script payloads
(the issue's ``x'+alert(1)+'`` among them), a node label and a running job's log and progress
carry more. An admin opens every page, clicks *Drain* on the hostile node (the confirmation must
show the name as text) and lets htmx refresh the job page. Any dialog other than that one, any
page error and any Content-Security-Policy violation (an injected script that CSP blocked)
fails the test; htmx requests must carry the session's CSRF token.
"""

from __future__ import annotations

import json
from urllib.parse import quote

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.e2e.helpers import shot, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

HOSTILE_NODES = ["x'+alert(1)+'", "\"><img src=x onerror=alert(2)>"]
HOSTILE_LABEL = "<svg onload=alert(3)>"
HOSTILE_LOG = "<script>alert(4)</script>"
HOSTILE_PROGRESS = "</script><script>alert(5)</script>"
CSP_WATCH = ("document.addEventListener('securitypolicyviolation',"
             " e => console.error('csp-violation ' + e.violatedDirective + ' ' + e.sample));")


def _register(server, name: str, index: int) -> None:  # noqa: ANN001
    """Register a node named ``name``; where hostnames are validated, rename a valid one in the
    database (the dashboard must be safe whatever the data's origin)."""
    def body(hostname: str) -> dict:
        return {"node": {"hostname": hostname, "cpu_milli": 4000, "memory_mib": 16000,
                         "labels": {"rack": HOSTILE_LABEL}},
                "accelerators": [{"uuid": f"GPU-xss-{index}", "index": 0, "model": "T4", "memory_mib": 15360}]}
    auth = {"Authorization": f"Bearer {server.bootstrap_token}"}
    r = httpx.post(f"{server.url}/api/v1/agent/register", headers=auth, json=body(name), timeout=30)
    if r.status_code == 422:  # DNS-1123 hostnames: put the payload in place behind the API's back
        placeholder = f"xss-node-{index}"
        r = httpx.post(f"{server.url}/api/v1/agent/register", headers=auth, json=body(placeholder), timeout=30)
        engine = create_engine(server.db_url)
        with engine.begin() as conn:
            conn.execute(text("UPDATE nodes SET name = :name WHERE name = :old"),
                         {"name": name, "old": placeholder})
        engine.dispose()
    assert r.status_code == 200, r.text


def _hostile_job(server) -> str:  # noqa: ANN001
    progress = "GPUPOOL_PROGRESS " + json.dumps({"note": HOSTILE_PROGRESS})
    script = f"echo '{HOSTILE_LOG}'; echo '{progress}'; sleep 300"
    with server.client() as api:
        r = api.post("/api/v1/jobs", json={"name": "hostile-output", "command": ["sh", "-c", script],
                                           "resources": {"gpu": 0.5}})
        assert r.status_code == 201, r.text
        job_id = r.json()["id"]

        def shown() -> bool:
            job = api.get(f"/api/v1/jobs/{job_id}").json()
            logs = api.get(f"/api/v1/jobs/{job_id}/logs").text
            return job["status"] == "running" and HOSTILE_LOG in logs and job.get("progress")
        wait_for(shown, 60, "the hostile job running with its log and progress", interval=0.5)
    return job_id


def test_hostile_names_and_output_run_no_script(cluster, browser) -> None:  # noqa: ANN001
    server, _agent = cluster
    for i, name in enumerate(HOSTILE_NODES):
        _register(server, name, i)
    job_id = _hostile_job(server)

    ctx = browser.new_context(viewport={"width": 1440, "height": 900})
    ctx.add_init_script(CSP_WATCH)
    page = ctx.new_page()
    dialogs, problems = [], []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("console", lambda m: problems.append(m.text) if "csp-violation" in m.text else None)

    page.goto(f"{server.url}/login")
    page.fill("#token", server.admin_token)
    page.click("button[type=submit]")
    page.wait_for_url(f"{server.url}/")

    paths = ["/", "/nodes", *[f"/nodes/{quote(n, safe='')}" for n in HOSTILE_NODES], "/events",
             "/jobs", f"/jobs/{job_id}", "/queues", "/admin"]
    for path in paths:
        resp = page.goto(f"{server.url}{path}")
        assert resp.status == 200, (path, resp.status)
        page.wait_for_load_state("load")
    nodes_text = page.goto(f"{server.url}/nodes") and page.inner_text("main")
    assert all(n in nodes_text for n in HOSTILE_NODES)  # shown as text

    # the hostile node's page: its name and label as text; Drain asks with the name as text
    page.goto(f"{server.url}/nodes/{quote(HOSTILE_NODES[0], safe='')}")
    assert HOSTILE_NODES[0] in page.inner_text("h1") and HOSTILE_LABEL in page.inner_text("main")
    page.click("button:has-text('Drain')")  # dismissed: nothing drains
    assert dialogs == [f"Drain {HOSTILE_NODES[0]}? Its jobs are stopped and requeued."], dialogs
    shot(page, "xss-node")
    with server.client() as api:
        assert not api.get(f"/api/v1/nodes/{quote(HOSTILE_NODES[0], safe='')}").json()["cordoned"]

    # the job page shows the output as text and htmx refreshes it with the CSRF header
    page.goto(f"{server.url}/jobs/{job_id}")
    assert HOSTILE_LOG in page.inner_text("[data-testid=job-logs]")
    assert HOSTILE_PROGRESS in page.inner_text("#job-live")
    token = page.get_attribute("input[name=csrf_token]", "value")
    page.evaluate("document.getElementById('job-live').dataset.old = 'yes'")
    with page.expect_request(lambda r: "hx-request" in r.headers, timeout=30_000) as refresh:
        pass  # the live part refreshes every 5 s
    assert refresh.value.all_headers().get("x-csrf-token") == token
    page.wait_for_selector("#job-live:not([data-old])", timeout=30_000)  # swapped in
    assert HOSTILE_LOG in page.inner_text("[data-testid=job-logs]")  # still text after the swap
    shot(page, "xss-job")

    assert dialogs == [f"Drain {HOSTILE_NODES[0]}? Its jobs are stopped and requeued."], dialogs
    assert problems == [], problems
    ctx.close()
