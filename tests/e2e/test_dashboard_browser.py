"""Browser journey through the dashboard: Chromium (Playwright) against a real server and agent.

Admin and member sign in, read capacity, follow a pending job to its reason, the admin raises the
queue's limit and the job starts; the member cannot open admin pages. Every page visited is saved
as a screenshot under test-artifacts/.
"""

from __future__ import annotations

import re

import httpx
import pytest

from tests.e2e.helpers import shot, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


def _api(server, token: str) -> httpx.Client:  # noqa: ANN001
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=30)


def _setup_team(server) -> str:  # noqa: ANN001
    """Team research, queue research/train limited to 1 GPU, member alice; returns alice's token."""
    with _api(server, server.admin_token) as api:
        for path, body in [("/api/v1/teams", {"name": "research"}),
                           ("/api/v1/queues", {"name": "train", "team": "research",
                                               "guarantee_milli": 0, "limit_milli": 1000}),
                           ("/api/v1/users", {"name": "alice", "team": "research", "role": "member"})]:
            r = api.post(path, json=body)
            assert r.status_code in (200, 201), (path, r.text)
        r = api.post("/api/v1/tokens", json={"user": "alice", "name": "e2e"})
        assert r.status_code in (200, 201), r.text
        return r.json()["token"]


def _sign_in(browser, server, token: str):  # noqa: ANN001, ANN202
    ctx = browser.new_context(viewport={"width": 1440, "height": 900})
    page = ctx.new_page()
    page.goto(f"{server.url}/")
    assert "/login" in page.url  # not signed in: sent to the sign-in form
    page.fill("#token", token)
    page.click("button[type=submit]")
    page.wait_for_url(f"{server.url}/")
    return ctx, page


def test_dashboard_journey(cluster, browser) -> None:  # noqa: ANN001
    server, agent = cluster
    alice_token = _setup_team(server)

    # a wrong token is refused with a message, not a traceback
    ctx = browser.new_context()
    page = ctx.new_page()
    page.goto(f"{server.url}/login")
    page.fill("#token", "gpa_not_a_real_token")
    page.click("button[type=submit]")
    assert "not valid" in page.inner_text("[role=alert]")
    shot(page, "login-error")
    ctx.close()

    # alice submits a job needing 2 GPUs to a queue limited to 1: it stays pending (quota)
    with _api(server, alice_token) as api:
        r = api.post("/api/v1/jobs", json={"name": "finetune-llama", "queue": "train",
                                           "command": ["sleep", "120"], "resources": {"gpu": 2}})
        assert r.status_code == 201, r.text
        job_id = r.json()["id"]
        wait_for(lambda: (api.get(f"/api/v1/jobs/{job_id}").json().get("pending_reason") or {}).get("code"),
                 30, "a pending reason from the scheduler")

    # member: overview shows capacity (2 simulated H100s) and the pending demand of research/train
    actx, _ = None, None
    mctx, member = _sign_in(browser, server, alice_token)
    assert "member" in member.inner_text("[data-testid=whoami]")
    assert "2 GPUs" in member.inner_text("[data-testid=stat-capacity]")
    assert "H100-80GB" in member.inner_text("[data-testid=capacity-table]")
    pending_table = member.inner_text("[data-testid=pending-table]")
    assert "research/train" in pending_table and "quota" in pending_table
    member.wait_for_timeout(300)
    shot(member, "overview-member")

    # follow the pending job to its reason: overview -> jobs list -> job page
    member.click("[data-testid=pending-table] a")
    member.wait_for_selector(f"[data-testid=job-{job_id}]")
    assert "finetune-llama" in member.inner_text(f"[data-testid=job-{job_id}]")
    shot(member, "jobs-pending-member")
    member.click(f"[data-testid=job-{job_id}] a >> nth=0")
    member.wait_for_selector("[data-testid=pending-reason]")
    reason = member.inner_text("[data-testid=pending-reason]")
    assert "quota" in reason, reason
    shot(member, "job-pending-reason")

    # a member cannot open admin pages (nor edit quotas); no admin link either
    for path in ("/admin", "/queues/research/train/edit"):
        resp = member.goto(f"{server.url}{path}")
        assert resp.status == 403, path
        assert "administrators" in member.inner_text("[data-testid=error-detail]")
    shot(member, "admin-forbidden-member")
    member.goto(f"{server.url}/queues")
    assert member.locator("a:has-text('Edit')").count() == 0
    assert member.locator("a.nav:has-text('Users')").count() == 0
    shot(member, "queues-member")

    # admin raises research/train's limit to 2 GPUs in the browser ...
    actx, admin = _sign_in(browser, server, server.admin_token)
    admin.wait_for_timeout(300)
    shot(admin, "overview-admin")
    admin.goto(f"{server.url}/queues")
    admin.click("[data-testid=queue-research-train] a:has-text('Edit')")
    admin.fill("#limit", "abc")
    admin.click("button:has-text('Save quota')")
    assert "must be a number" in admin.inner_text("[role=alert]")  # bad input named, not a 500
    shot(admin, "queue-edit-error")
    admin.fill("#limit", "2")
    admin.click("button:has-text('Save quota')")
    admin.wait_for_selector("[role=status]")
    assert admin.inner_text("[data-testid=queue-research-train] [data-testid=limit]").strip() == "2"

    # ... and the job starts: its page shows it running with a placement on the agent's node
    def running() -> bool:
        admin.goto(f"{server.url}/jobs/{job_id}")
        return "running" in admin.inner_text("#job-status")
    wait_for(running, 60, "the job to start after the quota was raised", interval=1.0)
    assert agent.name in admin.inner_text("body")
    assert admin.locator("[data-testid=job-gpus] tbody tr").count() == 2  # its two GPUs' metrics
    shot(admin, "job-running")

    admin.goto(f"{server.url}/queues")
    admin.wait_for_timeout(300)
    shot(admin, "queues-admin")

    # nodes: each GPU drawn as its slices, the job's slice on both GPUs
    admin.goto(f"{server.url}/nodes")
    node_row = admin.inner_text(f"[data-testid=node-{agent.name}]")
    assert "H100-80GB" in node_row and "finetune-llama" in node_row
    shot(admin, "nodes")
    admin.click(f"[data-testid=node-{agent.name}] a >> nth=0")
    admin.wait_for_selector("[data-testid=gpu-0]")
    shot(admin, "node-detail")

    # jobs filters (htmx) and the events audit log
    admin.goto(f"{server.url}/jobs")
    admin.select_option("select[name=status]", "running")
    admin.wait_for_url(re.compile(r".*status=running.*"))
    admin.wait_for_selector(f"[data-testid=job-{job_id}]")
    shot(admin, "jobs-admin")
    admin.goto(f"{server.url}/events")
    events = admin.inner_text("[data-testid=events-table]")
    assert "queue_updated" in events and "scheduled" in events
    shot(admin, "events")
    admin.goto(f"{server.url}/admin")
    assert "alice" in admin.inner_text("[data-testid=users-table]")
    shot(admin, "admin-users")

    # admin cancels the job from its page
    admin.goto(f"{server.url}/jobs/{job_id}")
    admin.once("dialog", lambda d: d.accept())
    admin.click("button:has-text('Cancel job')")
    wait_for(lambda: (admin.goto(f"{server.url}/jobs/{job_id}") and
                      "cancel" in admin.inner_text("#job-status")), 30, "the job cancelled", interval=1.0)
    mctx.close()
    actx.close()
