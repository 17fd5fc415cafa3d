"""Job lifecycle through a real server and fake agents: idempotent submit, pages, run, cancel,
failure, lost node requeue, drain, logs and events."""

from __future__ import annotations

import time
from datetime import datetime
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.support.fake_agent import FakeAgent
from tests.support.fixtures import server_fixture

# long enough that agents which do not heartbeat in a test are not lost on a loaded machine,
# short enough for the lost-node test
server = server_fixture({"GPUPOOL_HEARTBEAT_TIMEOUT_S": "8"})


def spec(name: str, model: str, gpu: float = 0.5, **extra) -> dict:  # noqa: ANN003
    return {"name": name, "command": ["python", "-c", "print(1)"],
            "resources": {"gpu": gpu, "models": [model]}, **extra}


def agent_for(server, tag: str, gpus: int = 1) -> tuple[FakeAgent, str]:  # noqa: ANN001
    model = f"M-{tag}-{uuid.uuid4().hex[:6]}"
    agent = FakeAgent(server.url, server.bootstrap_token, f"node-{tag}-{uuid.uuid4().hex[:6]}",
                      gpus=gpus, model=model)
    agent.register()
    return agent, model


def wait_for(fn, timeout: float = 15.0, agents: tuple = (), finish: bool = False):  # noqa: ANN001, ANN201
    """Poll ``fn`` (keeping ``agents`` alive and stepping them) until it returns truthy."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for a in agents:
            a.heartbeat()
            a.step(finish=finish)
        value = fn()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"condition not met in {timeout}s")


def job(c, job_id: str) -> dict:  # noqa: ANN001
    return c.get(f"/api/v1/jobs/{job_id}").json()


def test_idempotent_submit(server) -> None:  # noqa: ANN001
    body = spec("idem", "none-such", gpu=8)
    with server.client() as c:
        first = c.post("/api/v1/jobs", json=body, headers={"Idempotency-Key": "k-1"})
        again = c.post("/api/v1/jobs", json=body, headers={"Idempotency-Key": "k-1"})
        other = c.post("/api/v1/jobs", json=body, headers={"Idempotency-Key": "k-2"})
        assert (first.status_code, again.status_code, other.status_code) == (201, 200, 201)
        assert first.json()["id"] == again.json()["id"] != other.json()["id"]

        def submit(_: int) -> tuple[int, str]:
            r = c.post("/api/v1/jobs", json=body, headers={"Idempotency-Key": "race"})
            return r.status_code, r.json()["id"]

        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(submit, range(8)))
        assert len({i for _, i in results}) == 1
        assert sorted(code for code, _ in results).count(201) == 1
        assert len([j for j in c.get("/api/v1/jobs", params={"limit": 1000}).json()["items"]
                    if j["name"] == "idem"]) == 3


def test_pagination_and_filters(server) -> None:  # noqa: ANN001
    with server.client() as c:
        c.post("/api/v1/teams", json={"name": "pages"})
        ids = [c.post("/api/v1/jobs", json={**spec(f"p{i}", "none-such", gpu=8), "team": "pages"}).json()["id"]
               for i in range(7)]
        seen, cursor, pages = [], None, 0
        while True:
            page = c.get("/api/v1/jobs", params={"team": "pages", "limit": 3,
                                                 **({"cursor": cursor} if cursor else {})}).json()
            seen += [j["id"] for j in page["items"]]
            pages += 1
            cursor = page["next_cursor"]
            if not cursor:
                break
        assert seen == list(reversed(ids)) and pages == 3
        assert c.get("/api/v1/jobs", params={"team": "pages", "status": "running"}).json()["items"] == []
        assert len(c.get("/api/v1/jobs", params={"team": "pages", "status": "pending,running",
                                                 "queue": "default"}).json()["items"]) == 7
        r = c.get("/api/v1/jobs", params={"status": "bogus"})
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "status"
        r = c.get("/api/v1/jobs", params={"cursor": "abc"})
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "cursor"
        r = c.get("/api/v1/jobs", params={"limit": 0})
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "limit"
        # every pending job says why it is pending
        wait_for(lambda: all(j["pending_reason"] for j in c.get(
            "/api/v1/jobs", params={"team": "pages"}).json()["items"]))


def test_job_runs_to_success_with_logs_progress_and_events(server) -> None:  # noqa: ANN001
    agent, model = agent_for(server, "ok")
    with server.client() as c:
        job_id = c.post("/api/v1/jobs", json=spec("ok", model)).json()["id"]
        order = wait_for(lambda: agent.assignments()["start"])[0]
        assert order["job_id"] == job_id and order["slices"][0]["compute_milli"] == 500
        assert order["argv"][:2] == ["python", "-c"] and order["rendezvous"]["nnodes"] == 1
        assert job(c, job_id)["status"] == "scheduled"
        agent.report(job_id, order["attempt_id"], "started")
        assert job(c, job_id)["status"] == "running"
        agent.log(job_id, order["attempt_id"], 0, "hello\nGPUPOOL_PROGRESS {\"step\": 7}\n")
        agent.log(job_id, order["attempt_id"], 0, "hello\n")  # replay: ignored
        agent.log(job_id, order["attempt_id"], 6, "world\n")
        acc = c.get(f"/api/v1/nodes/{agent.hostname}").json()["accelerators"][0]
        assert acc["allocated_milli"] == 500
        assert c.get(f"/api/v1/jobs/{job_id}/logs").text.count("hello") == 1
        assert c.get(f"/api/v1/jobs/{job_id}/logs", params={"tail": 1}).text == "world\n"
        assert job(c, job_id)["progress"] == {"step": 7}
        agent.report(job_id, order["attempt_id"], "exited", exit_code=0, seq=9000)
        agent.report(job_id, order["attempt_id"], "exited", exit_code=3, seq=9000)  # replay: no-op
        done = job(c, job_id)
        assert done["status"] == "succeeded" and done["exit_code"] == 0 and done["finished_at"]
        assert done["placement"][0]["node"] == agent.hostname
        kinds = [e["kind"] for e in c.get(f"/api/v1/jobs/{job_id}/events").json()["items"]]
        assert kinds == ["submitted", "scheduled", "running", "succeeded"]
        acc = c.get(f"/api/v1/nodes/{agent.hostname}").json()["accelerators"][0]
        assert acc["allocated_milli"] == 0
        with c.stream("GET", f"/api/v1/jobs/{job_id}/logs", params={"follow": "true"}) as r:
            assert "world" in r.read().decode()
        assert c.post(f"/api/v1/jobs/{job_id}/cancel").status_code == 409
    agent.close()


def test_cancel_pending_and_running(server) -> None:  # noqa: ANN001
    agent, model = agent_for(server, "cancel")
    with server.client() as c:
        pending = c.post("/api/v1/jobs", json=spec("never", model, gpu=4)).json()["id"]
        r = c.post(f"/api/v1/jobs/{pending}/cancel")
        assert r.status_code == 200 and r.json()["status"] == "cancelled"
        assert c.post(f"/api/v1/jobs/{pending}/cancel").status_code == 409
        running = c.post("/api/v1/jobs", json=spec("run", model)).json()["id"]
        wait_for(lambda: job(c, running)["status"] == "running", agents=(agent,))
        r = c.post(f"/api/v1/jobs/{running}/cancel")
        assert r.status_code == 200 and r.json()["status"] == "running"  # until the agent confirms
        acc = c.get(f"/api/v1/nodes/{agent.hostname}").json()["accelerators"][0]
        assert acc["allocated_milli"] == 500  # slices held until the process is gone
        agent.step()  # obeys the stop order, reports killed
        done = job(c, running)
        assert done["status"] == "cancelled" and "cancelled by user:admin" in done["status_reason"]
        acc = c.get(f"/api/v1/nodes/{agent.hostname}").json()["accelerators"][0]
        assert acc["allocated_milli"] == 0
    agent.close()


def test_failure_is_final_without_retry_on_failure(server) -> None:  # noqa: ANN001
    agent, model = agent_for(server, "fail")
    with server.client() as c:
        job_id = c.post("/api/v1/jobs", json=spec("fail", model)).json()["id"]
        wait_for(lambda: job(c, job_id)["status"] == "running", agents=(agent,))
        agent.step(exit_code=3)
        done = job(c, job_id)
        assert done["status"] == "failed" and done["exit_code"] == 3
        retried = c.post("/api/v1/jobs", json=spec("retry", model, retry={"on_failure": True,
                                                                           "max_attempts": 2})).json()["id"]
        wait_for(lambda: job(c, retried)["status"] == "running", agents=(agent,))
        agent.step(exit_code=1)
        wait_for(lambda: job(c, retried)["attempt"] == 2 and job(c, retried)["status"] == "running",
                 agents=(agent,))
        agent.step(exit_code=1)
        assert job(c, retried)["status"] == "failed"
    agent.close()


def test_lost_node_requeues_then_runs_elsewhere(server) -> None:  # noqa: ANN001
    doomed, model = agent_for(server, "lost")
    with server.client() as c:
        job_id = c.post("/api/v1/jobs", json=spec("lost", model, grace_s=0)).json()["id"]
        wait_for(lambda: job(c, job_id)["status"] == "running", agents=(doomed,))
        # the node stops heartbeating: past the timeout it is not_ready and the job requeued, held
        # until the old copy (stopped by its own agent's fence) is surely gone
        requeued = wait_for(lambda: (j := job(c, job_id))["status"] == "pending" and j, timeout=90)
        assert requeued["attempt"] == 1 and "lost" in requeued["status_reason"]
        assert requeued["pending_reason"]["code"] == "requeue_hold"
        node = c.get(f"/api/v1/nodes/{doomed.hostname}").json()
        assert node["state"] == "not_ready" and node["accelerators"][0]["allocated_milli"] == 0
        rescue = FakeAgent(server.url, server.bootstrap_token, f"rescue-{uuid.uuid4().hex[:6]}",
                           gpus=1, model=model)
        rescue.register()
        wait_for(lambda: job(c, job_id)["status"] == "succeeded", agents=(rescue,), finish=True, timeout=90)
        final = job(c, job_id)
        assert final["attempt"] == 2 and final["placement"][0]["node"] == rescue.hostname
        kinds = [e["kind"] for e in c.get(f"/api/v1/jobs/{job_id}/events").json()["items"]]
        assert "lost" in kinds and "requeued" in kinds
        # the lost node comes back, but stays not_ready while it still runs the requeued copy...
        assert doomed.heartbeat().status_code == 200
        assert c.get(f"/api/v1/nodes/{doomed.hostname}").json()["state"] == "not_ready"
        stale = list(doomed.running)
        assert stale and not set(stale) & set(doomed.assignments()["desired_attempts"])
        doomed.running.clear()  # ...until its agent has stopped that copy
        assert doomed.heartbeat().status_code == 200
        assert c.get(f"/api/v1/nodes/{doomed.hostname}").json()["state"] == "ready"
        rescue.close()
    doomed.close()


def test_drain_requeues_running_jobs_and_cordon_blocks_new_ones(server) -> None:  # noqa: ANN001
    agent, model = agent_for(server, "drain")
    with server.client() as c:
        job_id = c.post("/api/v1/jobs", json=spec("drain", model)).json()["id"]
        wait_for(lambda: job(c, job_id)["status"] == "running", agents=(agent,))
        node = c.post(f"/api/v1/nodes/{agent.hostname}/drain").json()
        assert node["cordoned"] and node["state"] == "draining"
        agent.step(finish=False)  # stop order -> killed
        j = wait_for(lambda: (x := job(c, job_id))["status"] == "pending" and x)
        assert "drained" in j["status_reason"]
        time.sleep(0.6)
        agent.heartbeat()
        assert agent.assignments()["start"] == []  # cordoned: nothing new
        reason = wait_for(lambda: job(c, job_id)["pending_reason"])
        assert reason["code"]
        assert c.post(f"/api/v1/nodes/{agent.hostname}/uncordon").json()["cordoned"] is False
        wait_for(lambda: job(c, job_id)["status"] == "running", agents=(agent,))
        assert c.post("/api/v1/nodes/no-such-node/cordon").status_code == 404
    agent.close()


def test_agent_that_lost_its_state_can_report_again(server) -> None:  # noqa: ANN001
    agent, model = agent_for(server, "amnesia")
    with server.client() as c:
        job_id = c.post("/api/v1/jobs", json=spec("amnesia", model)).json()["id"]
        order = wait_for(lambda: agent.assignments()["start"])[0]
        agent.report(job_id, order["attempt_id"], "started", seq=1)
        old_token = agent.token
        # same hostname, fresh state (seq starts over): a known node re-registers only with its own
        # token or an admin's, never a bootstrap token, so an admin re-registers it
        agent.bootstrap_token = server.admin_token
        agent.register()
        assert agent.token != old_token
        with server.client(old_token) as stale:
            assert stale.post("/api/v1/agent/heartbeat", json={"node_id": agent.node_id, "ts": 0}).status_code == 401
        agent.report(job_id, order["attempt_id"], "exited", exit_code=0, seq=1)
        assert job(c, job_id)["status"] == "succeeded"
    agent.close()


def test_assignments_long_poll_wakes_on_change_and_times_out_otherwise(server) -> None:  # noqa: ANN001
    agent, model = agent_for(server, "poll")
    agent.assignments()  # learn the current epoch
    agent.heartbeat()
    t0 = time.monotonic()
    idle = agent.assignments(wait=1.0)
    assert 0.9 <= time.monotonic() - t0 < 4 and idle["start"] == []
    with server.client() as c, ThreadPoolExecutor(1) as pool:
        t0 = time.monotonic()
        agent.heartbeat()
        waiting = pool.submit(agent.assignments, 20.0)
        time.sleep(0.3)
        c.post("/api/v1/jobs", json=spec("poll", model))
        while not waiting.done() and time.monotonic() - t0 < 25:
            agent.heartbeat()  # stay alive (this module's heartbeat timeout is 1.5 s)
            time.sleep(0.3)
        woke = waiting.result(timeout=1)
        assert woke["start"] and time.monotonic() - t0 < 10
    agent.close()


def test_a_job_past_its_max_runtime_is_stopped_with_the_reason(server) -> None:  # noqa: ANN001
    agent, model = agent_for(server, "limit")
    with server.client() as c:
        job_id = c.post("/api/v1/jobs", json=spec("limit", model, max_runtime_s=1)).json()["id"]
        assert job(c, job_id)["spec"]["max_runtime_s"] == 1
        wait_for(lambda: job(c, job_id)["status"] == "running", agents=(agent,))
        done = wait_for(lambda: (j := job(c, job_id))["status"] == "failed" and j, agents=(agent,), timeout=60)
        assert done["reason_code"] == "timed_out" and "max_runtime_s of 1 s" in done["status_reason"]
    agent.close()


def test_a_blocked_job_shows_its_expected_start(server) -> None:  # noqa: ANN001
    """Running jobs that declare max_runtime_s let the scheduler say when a waiting job starts."""
    from controlplane.cli.render import job_detail
    from controlplane.schemas import Job

    agent, model = agent_for(server, "eta")
    with server.client() as c:
        first = c.post("/api/v1/jobs", json=spec("eta-first", model, gpu=1, max_runtime_s=3600)).json()
        wait_for(lambda: job(c, first["id"])["status"] == "running", agents=(agent,))
        waiting = c.post("/api/v1/jobs", json=spec("eta-next", model, gpu=1)).json()
        reason = wait_for(lambda: (r := job(c, waiting["id"])["pending_reason"]) and
                          r["details"].get("expected_start") and r, agents=(agent,))
        started = datetime.fromisoformat(job(c, first["id"])["started_at"].replace("Z", "+00:00")).timestamp()
        assert abs(reason["details"]["expected_start"] - (started + 3600)) < 5
        assert "expected to start in" in reason["message"]
        from rich.console import Console

        console = Console(record=True, width=120)
        console.print(job_detail(Job.model_validate(job(c, waiting["id"]))))
        assert "expected start" in console.export_text()
        for j in (waiting, first):
            c.post(f"/api/v1/jobs/{j['id']}/cancel")
    agent.close()
