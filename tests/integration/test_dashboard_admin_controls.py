"""Admin controls in the dashboard (in-process, SQLite and PostgreSQL): a queue's policy and
per-model/GPU-memory quotas on its edit page, the scheduler's policy and disabling users on the
admin page, returning an unhealthy GPU to service from its node's page; every form with its CSRF token."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from controlplane.server import create_app
from controlplane.settings import Settings
from tests.support.dashboard import post_form, sign_in

ADMIN = "gpa_controls_admin"
BOOT = "gpb_controls_boot"
API = {"Authorization": f"Bearer {ADMIN}"}
pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def site(db_url, tmp_path):  # noqa: ANN001, ANN201
    app = create_app(Settings(database_url=db_url, admin_token=ADMIN, bootstrap_token=BOOT,
                              run_loops=False, home=tmp_path))
    with TestClient(app) as client:
        assert client.post("/api/v1/users", headers=API, json={"name": "bob", "team": "default"}).status_code == 201
        r = client.post("/api/v1/agent/register", headers={"Authorization": f"Bearer {BOOT}"}, json={
            "node": {"hostname": "node-a", "cpu_milli": 8000, "memory_mib": 64000},
            "accelerators": [{"uuid": f"GPU-a-{i}", "index": i, "model": "H100-80GB", "memory_mib": 81559}
                             for i in range(2)]})
        assert r.status_code == 200, r.text
        assert sign_in(client, ADMIN, "/").status_code == 303
        yield client


def _queue(client: TestClient) -> dict:
    return next(q for q in client.get("/api/v1/queues", headers=API).json()["items"] if q["name"] == "default")


def test_queue_edit_page_sets_policy_and_quotas(site) -> None:  # noqa: ANN001
    page = "/queues/default/default/edit"
    html = site.get(page).text
    assert 'name="max_priority"' in html and 'name="model_guarantees"' in html and 'name="memory_limit"' in html
    r = post_form(site, page, "/queues/default/default", {
        "guarantee": "2", "limit": "4", "weight": "1.5", "model_guarantees": "H100-80GB=2, A100-80GB=0.5",
        "memory_guarantee": "80", "memory_limit": "160", "max_priority": "high", "max_min_runtime_s": "600",
        "max_pending_jobs": "25"}, follow_redirects=False)  # the checkbox left unticked: refused
    assert r.status_code == 303, r.text
    q = _queue(site)
    assert (q["guarantee_milli"], q["limit_milli"], q["weight"]) == (2000, 4000, 1.5)
    assert q["model_guarantees_milli"] == {"H100-80GB": 2000, "A100-80GB": 500}
    assert (q["memory_guarantee_mib"], q["memory_limit_mib"]) == (81920, 163840)
    assert (q["max_priority"], q["allow_non_preemptible"], q["max_min_runtime_s"], q["max_pending_jobs"]) == \
           (100, False, 600, 25)
    html = site.get(page).text  # the form shows what is stored
    assert 'value="A100-80GB=0.5, H100-80GB=2"' in html and 'value="160"' in html and 'value="100"' in html

    r = post_form(site, page, "/queues/default/default", {"guarantee": "2", "memory_guarantee": "80",
                                                         "memory_limit": "40", "allow_non_preemptible": "on"})
    assert r.status_code == 422 and "memory_limit_mib" in r.text and 'value="40"' in r.text
    r = post_form(site, page, "/queues/default/default", {"guarantee": "2", "model_guarantees": "H100"})
    assert r.status_code == 422 and "MODEL=GPUS" in r.text
    assert _queue(site)["memory_limit_mib"] == 163840  # nothing half-saved
    r = site.post("/queues/default/default", data={"guarantee": "1"})  # no CSRF token
    assert r.status_code == 403


def test_admin_page_sets_the_scheduler_and_disables_users(site) -> None:  # noqa: ANN001
    html = site.get("/admin").text
    assert 'data-testid="scheduler-card"' in html and "server settings" in html
    r = post_form(site, "/admin", "/admin/scheduler", {"policy": "fgd", "weights": "fgd=1000, topology=2"},
                  follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/admin?saved=scheduler"
    shown = site.get("/api/v1/scheduler", headers=API).json()
    assert shown["policy"] == "fgd" and shown["weights"] == {"fgd": 1000, "topology": 2}
    assert "set by user:admin" in site.get("/admin").text
    r = post_form(site, "/admin", "/admin/scheduler", {"policy": "fgd", "weights": "warp=1"})
    assert r.status_code == 422 and "warp" in r.text

    r = post_form(site, "/admin", "/users/bob/disable", follow_redirects=False)
    assert r.status_code == 303
    assert next(u for u in site.get("/api/v1/users", headers=API).json()["items"] if u["name"] == "bob")["disabled"]
    assert 'action="/users/bob/enable"' in site.get("/admin").text
    assert 'action="/users/admin/disable"' not in site.get("/admin").text  # never yourself


def test_node_page_shows_why_a_gpu_is_unhealthy_and_returns_it(site) -> None:  # noqa: ANN001
    r = site.post("/api/v1/accelerators/GPU-a-1/mark-unhealthy", headers=API, json={"reason": "XID 79 seen in dmesg"})
    assert r.status_code == 200
    html = site.get("/nodes/node-a").text
    assert "XID 79 seen in dmesg" in html and 'action="/accelerators/GPU-a-1/mark-healthy"' in html
    r = post_form(site, "/nodes/node-a", "/accelerators/GPU-a-1/mark-healthy", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/nodes/node-a"
    accs = site.get("/api/v1/nodes/node-a", headers=API).json()["accelerators"]
    assert all(a["healthy"] for a in accs)
    assert "Mark healthy" not in site.get("/nodes/node-a").text
