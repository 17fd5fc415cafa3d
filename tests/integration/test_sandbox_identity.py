"""A job runs as its team's own uid: not root, not another team's, shut out of others' files.

Real processes started by the real runtime as root; the checks run inside the jobs themselves.
"""

from __future__ import annotations

import json
import os

import pytest

from tests.integration.sandbox_support import (finished, host, job_python, make_runtime, order,  # noqa: F401
                                               processes_with, stdout, until, world)

PROBE = r"""
import json, os, signal, sys
target_dir, target_pid, state_dir = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def attempt(fn):
    try:
        fn()
        return "ok"
    except OSError as exc:
        return os.strerror(exc.errno)
out = {"uid": os.getuid(), "gid": os.getgid(), "groups": os.getgroups(),
       "read_spec": attempt(lambda: open(os.path.join(target_dir, "spec.json")).read()),
       "list_dir": attempt(lambda: os.listdir(target_dir)),
       "read_node_token": attempt(lambda: open(os.path.join(state_dir, "node.json")).read()),
       "list_state": attempt(lambda: os.listdir(state_dir)),
       "kill": attempt(lambda: os.kill(target_pid, signal.SIGKILL)),
       "env_secrets": sorted(k for k in os.environ if "SECRET" in k or k.startswith("GPUPOOL_AGENT"))}
print(json.dumps(out), flush=True)
"""


def test_teams_get_own_uids_and_cannot_touch_each_other(world, monkeypatch):
    # secrets in the agent's own environment must never reach a job
    monkeypatch.setenv("GPUPOOL_AGENT_TOKEN", "bootstrap-secret")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "cloud-secret")
    rt, reports = make_runtime(world)
    rt.state.save_identity({"node_id": "n", "node_token": "node-secret"})
    py = job_python()
    victim = order("b1", [py, "-c", "import time; print('up', flush=True); time.sleep(120)"], team="vision",
                   spec={"model": "m", "env": {"HF_TOKEN": "spec-secret-value"}})
    rt.start(victim)
    until(rt, lambda: "up" in stdout(rt, "b1"), what="victim up")
    b = rt.job("b1")
    b_dir, b_pid = b.record["sandbox"]["work_dir"], b.record["child_pid"]
    rt.start(order("a1", [py, "-c", PROBE, b_dir, str(b_pid), str(rt.state.root)], team="ml"))
    report = finished(rt, "a1")
    assert report["exit_code"] == 0, stdout(rt, "a1") + (rt.job("a1").job_dir / "stderr.log").read_text()
    seen = json.loads(stdout(rt, "a1"))
    uid_a, uid_b = rt.job("a1").record["sandbox"]["uid"], b.record["sandbox"]["uid"]
    assert seen["uid"] == uid_a != 0 and seen["gid"] == uid_a and uid_a != uid_b
    assert seen["groups"] in ([], [uid_a])  # no supplementary groups
    assert seen["read_spec"] == seen["list_dir"] == "Permission denied"
    assert seen["read_node_token"] == seen["list_state"] == "Permission denied"
    assert seen["kill"] == "Operation not permitted"  # EPERM: another uid's process
    assert seen["env_secrets"] == []
    assert os.stat(b_dir).st_uid == uid_b and oct(os.stat(b_dir).st_mode & 0o777) == "0o700"
    assert oct(os.stat(rt.state.root).st_mode & 0o777) == "0o700"
    # the spec reached the victim as a file only its uid reads; no secret in any command line
    spec = os.path.join(b_dir, "spec.json")
    assert os.stat(spec).st_uid == uid_b and os.stat(spec).st_mode & 0o777 == 0o400
    assert processes_with("spec-secret-value") == []
    assert rt.job("b1").state == "running"  # the kill attempt did nothing
    rt.stop("b1", "done", 0)
    until(rt, lambda: rt.job("b1").state != "running")
    assert "uid" in rt.job("a1").record["enforcement"]["identity"]


def test_same_team_shares_a_uid_and_job_scope_separates(world):
    rt, _ = make_runtime(world)
    py = job_python()
    for attempt, team in (("t1", "ml"), ("t2", "ml"), ("t3", "nlp")):
        rt.start(order(attempt, [py, "-c", "import os; print(os.getuid())"], team=team))
    for attempt in ("t1", "t2", "t3"):
        finished(rt, attempt)
    uids = {a: int(stdout(rt, a)) for a in ("t1", "t2", "t3")}
    assert uids["t1"] == uids["t2"] != uids["t3"]
    per_job, _ = make_runtime(world, identity_scope="job", uid_range="310000-310099")
    for attempt in ("j1", "j2"):
        per_job.start(order(attempt, [py, "-c", "import os; print(os.getuid())"], team="ml"))
    assert finished(per_job, "j1") and finished(per_job, "j2")
    assert int(stdout(per_job, "j1")) != int(stdout(per_job, "j2"))


def test_state_dir_must_be_private(world):
    root, _ = world
    state = root / "open-state"
    state.mkdir(mode=0o755)
    state.chmod(0o755)
    from agent.sandbox.policy import Sandbox

    with pytest.raises(ValueError, match="must be private to the agent.*0755"):
        Sandbox(mode="on", state_root=state, jobs_root=root / "jobs")


def test_job_in_an_unreachable_workdir_fails_with_the_reason(world):
    root, _ = world
    rt, reports = make_runtime(world)
    closed = root / "closed"
    closed.mkdir(mode=0o700)
    rt.start(order("w1", ["/bin/true"], workdir=str(closed)))
    report = finished(rt, "w1")
    assert report["exit_code"] == 127 and "cannot enter workdir" in report["reason"]
    assert "Permission denied" in report["reason"]
