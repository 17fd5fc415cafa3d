"""The Python SDK (controlplane.client) against a real server process: every call, and its errors."""

from __future__ import annotations

import pytest

from controlplane.client import GpupoolClient, GpupoolError
from controlplane.core.states import JobState, Role
from controlplane.schemas import Job, Queue
from tests.support.server import start_server

pytestmark = pytest.mark.timeout(120)

SPEC = {"name": "sdk-job", "command": ["true"], "resources": {"gpu": 0.5, "cpu_milli": 100}}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = start_server(f"sqlite:///{tmp_path_factory.mktemp('sdk') / 'cp.db'}")
    yield srv
    srv.stop()


@pytest.fixture
def admin(server):
    with GpupoolClient(server.url, server.admin_token) as c:
        yield c


def test_health_and_whoami(admin):
    assert admin.health().status == "ok"
    assert admin.ready().status == "ready"
    assert admin.whoami().role == "admin"


def test_jobs_submit_idempotent_list_get_cancel_events(admin):
    first = admin.submit_job(SPEC, idempotency_key="sdk-1")
    again = admin.submit_job(SPEC, idempotency_key="sdk-1")
    assert isinstance(first, Job) and first.id == again.id and first.status is JobState.PENDING
    assert first.spec is not None and first["id"] == first.id  # reads like the old dicts too
    other = admin.submit_job({**SPEC, "name": "sdk-job-2"})
    ids = [j.id for j in admin.iter_jobs(limit=1)]  # one per page: follows the cursor
    assert {first.id, other.id} <= set(ids) and len(ids) == len(set(ids))
    assert admin.get_job(first.id).name == "sdk-job"
    assert admin.list_jobs(status="pending", limit=50).items
    assert admin.cancel_job(first.id).status == "cancelled"
    with pytest.raises(GpupoolError) as err:
        admin.cancel_job(first.id)
    assert err.value.status == 409
    kinds = [e.kind for e in admin.job_events(first.id).items]
    assert kinds, "every transition is an event"
    assert admin.list_events(job=first.id).items
    done = admin.wait_for_job(first.id, timeout=5)
    assert done.status == "cancelled"


def test_teams_queues_users_tokens(admin, server):
    admin.create_team("sdk-team")
    assert "sdk-team" in {t.name for t in admin.list_teams().items}
    admin.create_queue("sdk-q", "sdk-team", guarantee_milli=1000, limit_milli=2000, weight=2)
    q = admin.update_queue("sdk-q", limit_milli=3000)
    assert isinstance(q, Queue) and q.limit_milli == 3000 and q.guarantee_milli == 1000
    assert "sdk-q" in {q.name for q in admin.list_queues().items}
    admin.create_user("sdk-user", "sdk-team", "member")
    assert "sdk-user" in {u.name for u in admin.list_users().items}
    tok = admin.create_token("sdk-user", "laptop")
    with GpupoolClient(server.url, tok.token) as member:
        me = member.whoami()
        assert (me.user, me.team, me.role) == ("sdk-user", "sdk-team", Role.MEMBER)
        job = member.submit_job({**SPEC, "queue": "sdk-q"})
        assert job.team == "sdk-team"
        with pytest.raises(GpupoolError) as err:
            member.create_team("nope")
        assert err.value.status == 403
    assert any(t.id == tok.id for t in admin.list_tokens().items)
    admin.delete_token(tok.id)
    with GpupoolClient(server.url, tok.token) as revoked, pytest.raises(GpupoolError) as err:
        revoked.whoami()
    assert err.value.status == 401
    assert admin.create_bootstrap_token().token
    with pytest.raises(GpupoolError) as err:
        admin.delete_queue("sdk-q")  # it holds a job
    assert err.value.status == 409
    admin.create_queue("sdk-empty", "sdk-team")
    admin.delete_queue("sdk-empty")
    assert "sdk-empty" not in {q.name for q in admin.list_queues().items}


def test_nodes_and_capacity_on_an_empty_pool(admin):
    assert admin.list_nodes().items == []
    assert admin.list_accelerators().items == []
    assert admin.capacity().totals.accelerators == 0
    with pytest.raises(GpupoolError) as err:
        admin.get_node("nope")
    assert err.value.status == 404 and "nope" in str(err.value)


def test_errors_carry_the_problem_detail(admin):
    with pytest.raises(GpupoolError) as err:
        admin.submit_job({"name": "bad", "command": ["x"], "resources": {"gpu": 1.5}})
    e = err.value
    assert e.status == 422 and "resources.gpu" in str(e) and "\n" not in str(e)
    assert e.problem["status"] == 422
    with pytest.raises(GpupoolError) as err:
        admin.get_job("999999")
    assert err.value.status == 404
    with pytest.raises(GpupoolError) as err:  # refused by the request schema before it is sent
        admin.create_queue("q", "default", weight=0, colour="red")
    assert err.value.status is None and {e["field"] for e in err.value.errors} == {"weight", "colour"}
    with GpupoolClient("http://127.0.0.1:1") as dead, pytest.raises(GpupoolError) as err:
        dead.health()
    assert err.value.status is None and "cannot reach" in str(err.value)
