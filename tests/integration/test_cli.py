"""The `gpupool` CLI against a real server process and a real agent (simulated GPUs) on loopback."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from controlplane.cli.main import app
from controlplane.client import GpupoolClient
from tests.support.server import start_server

pytestmark = pytest.mark.timeout(180)
ROOT = Path(__file__).resolve().parents[2]
GPUS = 2


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    """A server on SQLite with one agent of two simulated H100s."""
    tmp = tmp_path_factory.mktemp("cli")
    server = start_server(f"sqlite:///{tmp / 'cp.db'}",
                          env={"GPUPOOL_SCHEDULER_INTERVAL_S": "0.3",
                               "GPUPOOL_HEARTBEAT_INTERVAL_S": "1"})
    agent = start_cli_agent(server.url, server.bootstrap_token, tmp)
    try:
        with GpupoolClient(server.url, server.admin_token) as c:
            deadline = time.monotonic() + 30
            while not any(n["name"] == "cli-node" and n["state"] == "ready"
                          for n in c.list_nodes()["items"]):
                assert time.monotonic() < deadline, "agent did not register"
                time.sleep(0.2)
        yield server
    finally:
        agent.terminate()
        agent.wait(timeout=20)
        server.stop()


def start_cli_agent(url: str, bootstrap_token: str, tmp: Path) -> subprocess.Popen:
    """`gpupool agent` as its own process (this also tests the command)."""
    log = open(tmp / "agent.log", "wb")
    return subprocess.Popen(
        [sys.executable, "-m", "controlplane.cli.main", "agent", "--server", url,
         "--token", bootstrap_token, "--node", "cli-node", "--simulate", f"{GPUS}xH100-80GB",
         "--state-dir", str(tmp / "agent"), "--exporter-port", "0", "--heartbeat-interval", "1"],
        stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)


@pytest.fixture
def cli(pool, monkeypatch, tmp_path):
    """Run `gpupool ...` in-process as the admin; returns (exit code, stdout, stderr)."""
    monkeypatch.setenv("GPUPOOL_SERVER", pool.url)
    monkeypatch.setenv("GPUPOOL_TOKEN", pool.admin_token)
    monkeypatch.setenv("GPUPOOL_HOME", str(tmp_path))  # no stray config file
    monkeypatch.setenv("COLUMNS", "200")
    runner = CliRunner()

    def run(*args: str, env: dict | None = None):
        result = runner.invoke(app, list(args), env=env, catch_exceptions=False)
        return result.exit_code, result.stdout, result.stderr

    return run


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    assert lines[0].startswith("error: ")
    return lines[0]


JOB = """\
name: {name}
resources: {{gpu: 0.5, cpu_milli: 100, memory_mib: 64}}
command:
  - python
  - -c
  - |
    import json, time
    for i in range(1, 4):
        print("line", i, flush=True)
        print("GPUPOOL_PROGRESS " + json.dumps({{"step": i, "total": 3}}), flush=True)
        time.sleep({sleep})
"""


def test_submit_jobs_job_logs(cli, pool, tmp_path):
    spec = write(tmp_path, "ok.yaml", JOB.format(name="cli-ok", sleep=0.2))
    code, out, _ = cli("submit", str(spec), "--quiet")
    assert code == 0
    job_id = out.strip()
    with GpupoolClient(pool.url, pool.admin_token) as c:
        job = c.wait_for_job(job_id, timeout=60)
        assert job["status"] == "succeeded", job
        # the last log chunks (and so the last progress line) may land just after the exit report
        c.wait_for_job(job_id, timeout=15, until=lambda j: (j.get("progress") or {}).get("step") == 3)

    code, out, _ = cli("jobs")
    assert code == 0 and "cli-ok" in out and "succeeded" in out and job_id in out

    code, out, _ = cli("job", job_id)
    assert code == 0
    assert "succeeded" in out and "cli-node" in out and "0.5 GPU" in out
    assert "100% (3/3)" in out  # the progress bar's figures from GPUPOOL_PROGRESS lines

    code, out, _ = cli("logs", job_id)
    assert code == 0 and "line 1" in out and "line 3" in out
    code, out, _ = cli("logs", job_id, "--tail", "1")
    assert code == 0 and "line 1" not in out


def test_logs_follow_streams_until_the_job_ends(cli, tmp_path):
    spec = write(tmp_path, "slow.yaml", JOB.format(name="cli-follow", sleep=0.7))
    code, out, _ = cli("submit", str(spec), "--quiet")
    assert code == 0
    started = time.monotonic()
    code, out, _ = cli("logs", out.strip(), "-f")
    assert code == 0
    assert "line 1" in out and "line 3" in out
    assert time.monotonic() - started >= 1.0  # it waited for the job rather than returning at once


def test_unfit_job_shows_why_it_is_pending_and_cancel(cli, tmp_path):
    spec = write(tmp_path, "big.yaml", "name: cli-big\nresources: {gpu: 4}\ncommand: [sleep, '1']\n")
    code, out, _ = cli("submit", str(spec), "--quiet")
    assert code == 0
    job_id = out.strip()
    deadline = time.monotonic() + 20
    while True:
        code, out, _ = cli("job", job_id)
        if "pending because" in out or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert "pending because" in out, out
    code, out, _ = cli("jobs", "--status", "pending")
    assert code == 0 and "cli-big" in out

    code, out, _ = cli("cancel", job_id)
    assert code == 0 and "cancelled" in out
    code, _, err = cli("cancel", job_id)
    assert code == 1 and "409" in one_error_line(err)


def test_pool_views(cli):
    code, out, _ = cli("nodes")
    assert code == 0 and "cli-node" in out and "H100-80GB" in out and "ready" in out
    code, out, _ = cli("capacity")
    assert code == 0 and "H100-80GB" in out and "total" in out
    code, out, _ = cli("queues")
    assert code == 0 and "default" in out


def test_token_create_gives_a_working_token(cli, pool):
    code, out, _ = cli("token", "create", "--name", "ci", "--quiet")
    assert code == 0
    token = out.strip()
    with GpupoolClient(pool.url, token) as c:
        assert c.whoami()["role"] == "admin"
    code, out, _ = cli("--token", token, "queues")
    assert code == 0 and "default" in out


@pytest.mark.parametrize(("text", "needle"), [
    ("name: x\ncommand: [a\n", "invalid YAML at line"),
    ("name: x\nresources: {gpu: 1.5}\ncommand: [a]\n", "resources.gpu"),
    ("name: x\nresourcez: {}\ncommand: [a]\n", "resourcez: unknown field"),
])
def test_bad_spec_files_give_one_clear_line(cli, tmp_path, text, needle):
    code, out, err = cli("submit", str(write(tmp_path, "bad.yaml", text)))
    assert code == 1 and needle in one_error_line(err) and out == ""


def test_spec_the_server_rejects_gives_one_line(cli, tmp_path):
    spec = write(tmp_path, "q.yaml", "name: x\nqueue: no-such-queue\ncommand: [a]\n")
    code, _, err = cli("submit", str(spec))
    line = one_error_line(err)
    assert code == 1 and "no-such-queue" in line


@pytest.mark.parametrize("args", [("job", "no-such-id"), ("logs", "no-such-id"),
                                  ("cancel", "no-such-id"), ("job", "../nodes")])
def test_unknown_ids_give_one_clear_line(cli, args):
    code, _, err = cli(*args)
    assert code == 1 and "404" in one_error_line(err)


def test_missing_or_bad_token_and_unreachable_server(cli, pool):
    code, _, err = cli("--token", "wrong", "jobs")
    assert code == 1 and "401" in one_error_line(err)
    code, _, err = cli("--server", "http://127.0.0.1:1", "jobs")
    assert code == 1 and "cannot reach" in one_error_line(err)


def test_console_script_process_never_prints_a_traceback(pool, tmp_path):
    """The real `python -m controlplane.cli.main` process: exit codes and one line on stderr."""
    env = {**os.environ, "GPUPOOL_SERVER": pool.url, "GPUPOOL_TOKEN": pool.admin_token,
           "GPUPOOL_HOME": str(tmp_path)}
    bad = write(tmp_path, "bad.yaml", "name: [\n")
    proc = subprocess.run([sys.executable, "-m", "controlplane.cli.main", "submit", str(bad)],
                          env=env, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 1 and "invalid YAML" in one_error_line(proc.stderr)
    proc = subprocess.run([sys.executable, "-m", "controlplane.cli.main", "queues"],
                          env=env, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0 and "default" in proc.stdout


def test_db_upgrade(cli, tmp_path, monkeypatch):
    monkeypatch.delenv("GPUPOOL_DATABASE_URL", raising=False)
    code, out, _ = cli("db", "upgrade")  # default: SQLite in $GPUPOOL_HOME
    assert code == 0 and (tmp_path / "gpupool.db").exists()
    code, out, _ = cli("db", "upgrade", "--database-url", f"sqlite:///{tmp_path / 'new.db'}")
    assert code == 0 and "latest revision" in out
    assert (tmp_path / "new.db").exists()
    code, _, err = cli("db", "upgrade", "--database-url", "nosuchdb://x")
    assert code == 1 and "nosuchdb" in one_error_line(err)


def test_submit_wait_follows_the_job_and_sets_the_exit_code(cli, tmp_path):
    ok = write(tmp_path, "ok.yaml", JOB.format(name="cli-wait-ok", sleep=0.1))
    code, out, _ = cli("submit", str(ok), "--wait")
    assert code == 0 and "succeeded" in out
    bad = write(tmp_path, "bad.yaml", "name: cli-wait-bad\nresources: {gpu: 0.25, cpu_milli: 100}\n"
                                      "command: [python, -c, 'import sys; sys.exit(3)']\n")
    code, out, _ = cli("submit", str(bad), "--wait")
    assert code == 1 and "failed" in out and "exit code 3" in out
