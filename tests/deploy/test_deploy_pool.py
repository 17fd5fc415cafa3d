"""A pool in containers, from the built images only: the migration job, two control-plane
replicas and three agents on simulated GPUs, all on host networking, with the host's PostgreSQL.

A job runs end to end; the replica holding the scheduler lease is killed and the other one takes
over (scheduling goes on); an agent container is restarted and re-adopts its running job from its
state volume. Agents run as the DaemonSet runs them: root, host PID namespace, the host's cgroup
tree, exactly the DaemonSet's capabilities.
"""

from __future__ import annotations

import importlib.util
import os
import secrets
import signal
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.deploy.containers import AGENT_CAPABILITIES, Containers, build_images, engine_command
from tests.deploy.failover import FailoverProxy
from tests.integration.e2e_agent_support import Api, py_job
from tests.support.db import postgres_available, postgres_database
from tests.support.server import TEST_DEFAULTS, free_port
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]
REPLICAS = ("cp-a", "cp-b")
NODES = ("node-1", "node-2", "node-3")


def _status(url: str) -> tuple[int, dict]:
    try:
        r = httpx.get(url, timeout=3)
    except httpx.HTTPError:
        return 0, {}
    return r.status_code, r.json() if "json" in r.headers.get("content-type", "") else {}


class Pool:
    """The containers of one pool and what the tests need to reach them."""

    def __init__(self, c: Containers, images: dict, db_url: str, root: Path) -> None:
        self.c, self.images, self.db_url, self.root = c, images, db_url, root
        self.marker = f"gpupool-pool-test-{secrets.token_hex(4)}"  # in every job's argv
        self.admin = "gpa_" + secrets.token_urlsafe(16)
        self.boot = "gpb_" + secrets.token_urlsafe(16)
        self.ports = {r: free_port() for r in REPLICAS}
        self.servers: dict[str, str] = {}
        self.agents: dict[str, str] = {}
        self.exporter = {n: free_port() for n in NODES}
        self.release = root / "release"
        self.release.mkdir(mode=0o755)
        self.proxy = FailoverProxy([self.ports[r] for r in REPLICAS])
        self.api = Api(self.proxy.url, self.admin)

    def alive(self, container: str) -> bool:
        assert self.c.running(container), f"{container} exited:\n{self.c.logs(container)[-3000:]}"
        return True

    def start_servers(self) -> None:
        env = {**TEST_DEFAULTS, "GPUPOOL_DATABASE_URL": self.db_url, "GPUPOOL_ADMIN_TOKEN": self.admin,
               "GPUPOOL_BOOTSTRAP_TOKEN": self.boot}
        for r in REPLICAS:  # started together, as a Deployment's replicas are
            port = self.ports[r]
            self.servers[r] = self.c.run(
                r, self.images["gpupool"], "server", "--host", "127.0.0.1", "--port", str(port),
                env={**env, "GPUPOOL_REPLICA_ID": r,
                     "GPUPOOL_HEALTHCHECK_URL": f"http://127.0.0.1:{port}/healthz"})
        for r in REPLICAS:
            wait_until(lambda: self.alive(self.servers[r])
                       and _status(f"http://127.0.0.1:{self.ports[r]}/readyz")[0] == 200,
                       120, f"replica {r} ready")

    def start_agent(self, node: str) -> None:
        state, jobs = self.root / node / "state", self.root / node / "jobs"
        state.mkdir(parents=True, exist_ok=True)
        jobs.mkdir(parents=True, exist_ok=True)
        caps = [a for cap in AGENT_CAPABILITIES for a in ("--cap-add", cap)]
        port = self.exporter[node]
        self.agents[node] = self.c.run(
            node, self.images["agent-slim"],
            "--server", self.proxy.url, "--token", self.boot, "--node-name", node,
            "--simulate", "1x2xH100-80GB", "--exporter-port", str(port), "--heartbeat-interval", "0.5",
            "--poll-wait", "2", "--tick", "0.2",
            env={"GPUPOOL_HEALTHCHECK_URL": f"http://127.0.0.1:{port}/healthz"},
            options=("--user", "0", "--pid", "host", "--cap-drop", "ALL", *caps,
                     "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw",
                     "-v", f"{state}:/var/lib/gpupool", "-v", f"{jobs}:/var/lib/gpupool-jobs",
                     "-v", f"{self.release}:/release:ro"))

    def wait_agent(self, node: str) -> None:
        url = f"http://127.0.0.1:{self.exporter[node]}/healthz"
        wait_until(lambda: self.alive(self.agents[node]) and _status(url)[1].get("connected"),
                   120, f"agent {node} connected")

    def leader(self) -> str | None:
        dsn = self.db_url.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(dsn) as conn:
            row = conn.execute("SELECT holder FROM leases WHERE name = 'scheduler' "
                               "AND expires_at > extract(epoch from now())").fetchone()
        return row[0] if row else None

    def job(self, name: str, code: str) -> dict:
        return self.api.submit(py_job(name, f"# {self.marker}\n{code}", gpu=0.5))

    def healthy(self, container: str) -> bool:
        return self.c.cmd("healthcheck", "run", container, check=False).returncode == 0

    def stop(self) -> None:
        for job in self.api.http.get("/api/v1/jobs", params={"limit": 100}).json().get("items", []):
            if job["status"] in ("pending", "running"):
                self.api.http.post(f"/api/v1/jobs/{job['id']}/cancel")
        self.c.cleanup()
        self.proxy.stop()
        for pid in _pids_with(self.marker):  # jobs in their own cgroups outlive their agent
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _pids_with(marker: str) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and marker.encode() in (entry / "cmdline").read_bytes():
                out.append(int(entry.name))
        except OSError:
            continue
    return out


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    engine = engine_command()  # fails under GPUPOOL_REQUIRE_PODMAN=1 when missing
    why = postgres_available()
    if why:
        if os.environ.get("GPUPOOL_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"{why} and GPUPOOL_REQUIRE_POSTGRES=1")
        pytest.skip(why)
    images = build_images("gpupool", "agent-slim")
    with postgres_database("gpupool_pool") as db_url:
        p = Pool(Containers(engine), images, db_url, tmp_path_factory.mktemp("pool"))
        try:
            upgrade = p.c.run_once(images["gpupool"], "db", "upgrade",
                                   env={"GPUPOOL_DATABASE_URL": db_url})  # the migration Job
            assert upgrade.returncode == 0, upgrade.stdout + upgrade.stderr
            p.start_servers()
            for node in NODES:
                p.start_agent(node)
            for node in NODES:
                p.wait_agent(node)
            yield p
        finally:
            p.stop()


def test_a_job_runs_end_to_end_on_the_containerised_pool(pool: Pool) -> None:
    nodes = wait_until(lambda: {n["name"] for n in pool.api.nodes() if n["state"] == "ready"} >= set(NODES)
                       and pool.api.nodes(), 60, "three ready nodes")
    assert sum(len(n["accelerators"]) for n in nodes) == 6
    job = pool.job("hello", "import os\nprint('hello from the container pool as uid', os.getuid())\n")
    done = pool.api.wait_status(job["id"], "succeeded", 120)
    assert done["exit_code"] == 0
    assert "hello from the container pool" in pool.api.logs(job["id"])
    for container in [*pool.servers.values(), *pool.agents.values()]:
        assert pool.healthy(container), f"HEALTHCHECK of {container} failed"


def test_killing_the_leader_replica_hands_scheduling_to_the_other(pool: Pool) -> None:
    leader = wait_until(pool.leader, 30, "a scheduler lease holder")
    assert leader in REPLICAS
    other = next(r for r in REPLICAS if r != leader)
    pool.c.cmd("kill", pool.servers[leader])  # SIGKILL: no lease release, it has to expire
    wait_until(lambda: pool.leader() == other, 60, f"{other} taking the lease")
    job = pool.job("after-failover", "print('scheduled by the other replica')\n")
    assert pool.api.wait_status(job["id"], "succeeded", 120)["exit_code"] == 0
    assert not pool.c.running(pool.servers[leader])


@pytest.mark.skipif(importlib.util.find_spec("agent.sandbox") is None,
                    reason="jobs outlive the agent's container only in their own cgroups (node "
                           "sandbox, issue 10); without it the container's teardown kills them")
def test_restarted_agent_container_readopts_its_running_job(pool: Pool) -> None:
    code = ("import os, time, sys\nprint('before the restart', flush=True)\n"
            "while not os.path.exists('/release/' + os.environ['GPUPOOL_JOB_ID']): time.sleep(0.2)\n"
            "print('after the restart', flush=True)\n")
    job = pool.job("survivor", code)
    running = pool.api.wait_status(job["id"], "running", 120)
    node = running["placement"][0]["node"]
    wait_until(lambda: "before the restart" in pool.api.logs(job["id"]), 60, "the job's first line")
    container = pool.agents[node]
    pool.c.cmd("restart", "-t", "10", container)
    wait_until(lambda: "re-adopted 1 running job(s)" in pool.c.logs(container), 60,
               f"{node} re-adopting the job")
    pool.wait_agent(node)
    still = pool.api.job(job["id"])
    assert still["status"] == "running" and still["attempt"] == running["attempt"], still
    (pool.release / str(job["id"])).write_text("go")
    done = pool.api.wait_status(job["id"], "succeeded", 120)
    assert done["attempt"] == running["attempt"]
    assert "after the restart" in pool.api.logs(job["id"])
