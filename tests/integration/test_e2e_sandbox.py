"""End to end with the sandbox on: server and agent processes, jobs as their team's uid in cgroups.

The agent runs ``--sandbox on`` as root (skipped without root and cgroups; failed in CI with
GPUPOOL_REQUIRE_SANDBOX=1). A job reports a non-root uid and its enforcement lines; a cancelled
job's setsid'd and backgrounded children are gone afterwards (checked from /proc).
"""

from __future__ import annotations

import os

import pytest

from agent.sandbox.cgroups import detect_cgroups
from tests.integration.e2e_agent_support import AgentProc, Api, ServerProc, wait_until
from tests.integration.sandbox_support import need, processes_with

pytestmark = [pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    need(os.geteuid() == 0, "the sandbox needs root")
    need(detect_cgroups().usable, "no usable cgroups")
    root = tmp_path_factory.mktemp("e2e-sandbox")
    server = ServerProc(root, env={"GPUPOOL_HEARTBEAT_INTERVAL_S": "0.5", "GPUPOOL_HEARTBEAT_TIMEOUT_S": "10",
                                   "GPUPOOL_SCHEDULER_INTERVAL_S": "0.2", "GPUPOOL_LIVENESS_INTERVAL_S": "1"})
    server.start()
    agent = AgentProc(server.url, server.bootstrap_token, root, "sbx-n1", gpus="1x1xH100-80GB",
                      extra_args=["--sandbox", "on", "--uid-range", "320000-320999"])
    try:
        agent.start().wait_connected()
        yield agent, Api(server.url, server.admin_token)
    finally:
        agent.stop()
        agent.reap_jobs()
        server.stop()


def _bash_job(name: str, script: str) -> dict:
    return {"name": name, "command": ["bash", "-c", script], "grace_s": 2,
            "resources": {"gpu": 0.25, "cpu_milli": 500, "memory_mib": 256}}


def test_job_runs_as_its_own_uid_with_the_enforcement_reported(pool):
    agent, api = pool
    job = api.submit(_bash_job("whoami", "echo uid=$(id -u) home=$HOME; test -r /proc/1/environ || echo shut"))
    done = api.wait_status(job["id"], "succeeded")
    logs = wait_until(lambda: (t := api.logs(job["id"])) and "uid=" in t and t, 10, "logs")
    uid = int(logs.split("uid=")[1].split()[0])
    assert 320000 <= uid <= 320999 and "shut" in logs
    assert str(agent.jobs_dir) in logs  # $HOME is the job's own directory
    running = [e for e in api.events(job["id"]) if e["kind"] == "running"][0]["data"]["enforcement"]
    assert f"uid {uid}" in running["identity"] and running["cgroup"].startswith("cgroup")
    assert "device allow-list" in running["devices"]
    assert done["exit_code"] == 0


def test_cancel_leaves_no_process_behind(pool):
    agent, api = pool
    job = api.submit(_bash_job("daemonish", "setsid sleep 6191 & sleep 6192 & echo up; sleep 6193"))
    api.wait_status(job["id"], "running")
    wait_until(lambda: "up" in api.logs(job["id"]), 15, "job output")
    api.cancel(job["id"])
    api.wait_status(job["id"], "cancelled", timeout=20)
    wait_until(lambda: not any(processes_with(f"sleep {n}") for n in (6191, 6192, 6193)), 10, "no leftovers")
