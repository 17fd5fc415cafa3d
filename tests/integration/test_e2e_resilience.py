"""End to end resilience: agents killed (job lost and requeued elsewhere, stale copy stopped),
an agent restarted mid-job (re-adopts it), and the control plane down for 30 s (nothing lost).
"""

from __future__ import annotations

import time

import pytest

from tests.integration.e2e_agent_support import AgentProc, Api, ServerProc, py_job, wait_file_code, wait_until

FAST = {"GPUPOOL_HEARTBEAT_INTERVAL_S": "0.5", "GPUPOOL_SCHEDULER_INTERVAL_S": "0.2",
        "GPUPOOL_LIVENESS_INTERVAL_S": "0.5"}


@pytest.fixture
def cluster(tmp_path):
    made: list = []

    def make(n_agents: int, heartbeat_timeout_s: float, extra_args: list[str] | None = None):
        server = ServerProc(tmp_path, env={**FAST, "GPUPOOL_HEARTBEAT_TIMEOUT_S": str(heartbeat_timeout_s)})
        made.append(server)
        server.start()
        agents = []
        for i in range(n_agents):
            a = AgentProc(server.url, server.bootstrap_token, tmp_path, f"node{i}", gpus="1x1xA100-80GB",
                          extra_args=extra_args)
            made.append(a)
            agents.append(a.start())
        for a in agents:
            a.wait_connected()
        return server, agents, Api(server.url, server.admin_token)

    yield make
    for thing in reversed(made):
        thing.stop()
        if isinstance(thing, AgentProc):
            thing.reap_jobs()


def placed_on(job: dict) -> str:
    return job["placement"][0]["node"]


@pytest.mark.timeout(90)
def test_killed_agent_job_is_requeued_elsewhere_and_stale_copy_stopped(cluster, tmp_path):
    server, agents, api = cluster(2, heartbeat_timeout_s=3)
    by_name = {a.name: a for a in agents}
    code = ("import os,time\nrel=os.path.join(%r, 'release-'+os.environ['GPUPOOL_NODE'])\n"
            "print('attempt', os.environ['GPUPOOL_ATTEMPT_ID'], 'on', os.environ['GPUPOOL_NODE'], flush=True)\n"
            "while not os.path.exists(rel): time.sleep(0.05)\n" % str(tmp_path))
    job = api.submit(py_job("survivor", code, gpu=1))
    first = api.wait_status(job["id"], "running")
    victim = by_name[placed_on(first)]
    other = next(a for a in agents if a is not victim)
    wait_until(lambda: victim.job_alive(job["id"]), 10, "job process on the victim")
    victim.kill()
    again = wait_until(lambda: (j := api.job(job["id"]))["status"] == "running"
                       and placed_on(j) == other.name and j, 45, "requeued onto the other node")
    assert again["attempt"] == 2
    assert victim.job_alive(job["id"])  # the stale copy still runs: nobody could stop it yet
    (tmp_path / f"release-{other.name}").write_text("go")
    assert api.wait_status(job["id"], "succeeded")["exit_code"] == 0
    # the victim comes back: it re-adopts the stale copy, learns it is no longer wanted, stops it
    victim.start().wait_connected()
    wait_until(lambda: not victim.job_alive(job["id"]), 20, "stale copy stopped")
    assert "stale" in victim.log()
    assert api.job(job["id"])["status"] == "succeeded"


@pytest.mark.timeout(90)
def test_agent_restart_readopts_running_job(cluster, tmp_path):
    server, (agent,), api = cluster(1, heartbeat_timeout_s=8)
    release = tmp_path / "release-readopt"
    code = "print('before restart', flush=True)\n" + wait_file_code(release) + "print('after restart')\n"
    job = api.submit(py_job("readopt", code))
    api.wait_status(job["id"], "running")
    wait_until(lambda: "before restart" in api.logs(job["id"]), 15, "first output")
    agent.kill()
    assert agent.job_alive(job["id"])
    agent.start().wait_connected()
    assert "re-adopted" in agent.log()
    release.write_text("go")
    done = api.wait_status(job["id"], "succeeded")
    assert done["attempt"] == 1 and done["exit_code"] == 0
    logs = wait_until(lambda: (t := api.logs(job["id"])) and "after restart" in t and t, 10, "logs")
    assert logs.count("before restart") == 1


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_control_plane_down_30s_loses_no_report(cluster, tmp_path):
    server, (agent,), api = cluster(1, heartbeat_timeout_s=120)
    release = tmp_path / "release-outage"
    code = "print('working', flush=True)\n" + wait_file_code(release) + "print('finished offline')\n"
    job = api.submit(py_job("outage", code))
    short = api.submit(py_job("outage-short", "import time\nprint('short', flush=True)\n" + wait_file_code(tmp_path / "go2")))
    api.wait_status(job["id"], "running")
    api.wait_status(short["id"], "running")
    before = agent.health()
    server.stop()
    t0 = time.monotonic()
    release.write_text("go")  # one job ends while the server is away ...
    wait_until(lambda: agent.health().get("buffered_status_reports", 0) >= 1, 15, "exit report buffered")
    (tmp_path / "go2").write_text("go")  # ... and another one
    wait_until(lambda: agent.health().get("buffered_status_reports", 0) >= 2, 15, "second report buffered")
    time.sleep(max(0.0, 30 - (time.monotonic() - t0)))
    during = agent.health()
    assert not during["connected"] and during["buffered_samples"] > 0
    assert agent.proc.poll() is None
    server.start()
    back_at = time.time()
    wait_until(lambda: agent.health().get("buffered_status_reports") == 0
               and agent.health().get("buffered_samples") == 0, 30, "buffers replayed")
    after = agent.health()
    # every sample buffered during the outage was delivered (none dropped)
    assert after["dropped_samples"] == 0
    assert after["samples_delivered"] - before["samples_delivered"] >= during["buffered_samples"]
    assert api.wait_status(job["id"], "succeeded")["exit_code"] == 0
    assert api.wait_status(short["id"], "succeeded")["exit_code"] == 0
    assert "finished offline" in wait_until(lambda: api.logs(job["id"]), 10, "logs")
    # the replayed backlog did not leave an old sample as the accelerator's latest telemetry
    node = api.http.get("/api/v1/nodes/node0").json()
    assert node["accelerators"][0]["telemetry"]["ts"] >= back_at - 1


@pytest.mark.timeout(60)
def test_agent_stopping_with_stop_jobs_on_exit_ends_its_jobs(cluster, tmp_path):
    server, (agent,), api = cluster(1, heartbeat_timeout_s=30, extra_args=["--stop-jobs-on-exit"])
    job = api.submit(py_job("stopped-with-agent", "import time\nprint('up', flush=True)\ntime.sleep(120)"))
    api.wait_status(job["id"], "running")
    wait_until(lambda: agent.job_alive(job["id"]), 10, "job process")
    agent.stop()
    assert agent.proc.returncode == 0
    assert not agent.job_alive(job["id"])
    done = api.wait_status(job["id"], "failed", timeout=20)
    assert done["status_reason"] == "agent on node node0 stopped"


GANG = """
import os, socket, time
rank, world = int(os.environ['RANK']), int(os.environ['WORLD_SIZE'])
addr, port = os.environ['MASTER_ADDR'], int(os.environ['MASTER_PORT'])
print('rank', rank, 'of', world, 'node', os.environ['GPUPOOL_NODE'], 'master', addr, port, flush=True)
if rank == 0:
    srv = socket.create_server(('0.0.0.0', port))
    srv.settimeout(60)
    got = sorted(srv.accept()[0].recv(64).decode() for _ in range(world - 1))
    print('rank 0 heard from', got, flush=True)
else:
    for _ in range(600):
        try:
            socket.create_connection((addr, port), timeout=1).sendall(str(rank).encode())
            break
        except OSError:
            time.sleep(0.1)
    else:
        raise SystemExit('no rendezvous')
"""


@pytest.mark.timeout(90)
def test_gang_members_rendezvous_across_agents(cluster):
    server, agents, api = cluster(2, heartbeat_timeout_s=30)
    job = api.submit(py_job("gang", GANG, gpu=1, resources={"gpu": 1, "nodes": 2, "cpu_milli": 100,
                                                            "memory_mib": 64}))
    done = api.wait_status(job["id"], "succeeded", timeout=60)
    assert sorted(m["node"] for m in done["placement"]) == ["node0", "node1"]
    rank0 = api.http.get(f"/api/v1/jobs/{job['id']}/logs", params={"rank": 0}).text
    assert "rank 0 heard from ['1']" in rank0
