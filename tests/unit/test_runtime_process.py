"""Process runtime on real processes: env, logs, exit codes, stop with grace, re-adoption."""

from __future__ import annotations

import json
import os
import sys
import time

import pytest

from agent.enforce.mps import MpsController
from agent.runtime.manager import Runtime
from agent.state import StateDir
from controlplane.core.wire import SliceSpec, StartOrder, StatusKind

UUID = "GPU-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"


class Reports(list):
    def __call__(self, kind, job, **fields):
        self.append({"kind": kind, "attempt": job.attempt_id, **fields})

    def kinds(self, attempt):
        return [r["kind"] for r in self if r["attempt"] == attempt]


@pytest.fixture(autouse=True)
def _reap_jobs():
    made.clear()
    yield
    for rt in made:  # never leave job processes behind, even when a test fails
        for attempt in list(rt.jobs):
            rt.stop(attempt, "test teardown", 0)


made: list = []


def make(tmp_path, **kw):
    reports = Reports()
    rt = Runtime(StateDir(tmp_path / "state"), node_name="n1", address="127.0.0.1", report=reports,
                 mps=MpsController("off", tmp_path), log_flush_s=0.5, **kw)
    made.append(rt)
    return rt, reports


def order(attempt, code, **kw):
    return StartOrder(job_id="job-" + attempt, attempt_id=attempt, epoch=1, name="t",
                      argv=["python", "-c", code], grace_s=kw.pop("grace_s", 5.0),
                      slices=[SliceSpec(accelerator_uuid=UUID, compute_milli=500, memory_mib=1000,
                                        device_memory_mib=4000)], **kw)


def wait_for(pred, timeout=10.0, rt=None):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if rt is not None:
            rt.tick()
        if pred():
            return True
        time.sleep(0.02)
    raise AssertionError("condition not reached in time")


def drain_logs(rt, attempt):
    job = rt.job(attempt)
    for stream in ("stdout", "stderr"):
        rt.advance_offset(attempt, stream, (job.job_dir / f"{stream}.log").stat().st_size)


def test_runs_with_slice_env_and_reports_exit(tmp_path):
    rt, reports = make(tmp_path)
    code = ("import os,json,sys; print(json.dumps({k: v for k, v in os.environ.items() "
            "if k.startswith(('GPUPOOL','CUDA','NVIDIA','MASTER'))})); print('oops', file=sys.stderr)")
    rt.start(order("a1", code, env={"GPUPOOL_AGENT_TOKEN": "x", "USER_VAR": "1"}, port_count=1))
    assert reports[0]["kind"] == StatusKind.STARTED and reports[0]["pid"] > 0
    wait_for(lambda: rt.job("a1").state == "exited", rt=rt)
    job = rt.job("a1")
    env = json.loads((job.job_dir / "stdout.log").read_text())
    # torch cap = slice 1000 MiB - margin 714 MiB (context + workspace) of 3520 usable MiB
    assert env["CUDA_VISIBLE_DEVICES"] == UUID and env["GPUPOOL_MEMORY_FRACTION"] == "0.0812"
    assert env["GPUPOOL_JOB_ID"] == "job-a1" and env["GPUPOOL_PORT"].isdigit()
    assert "GPUPOOL_AGENT_TOKEN" in env  # the order's own env passes through (not the agent's)
    assert (job.job_dir / "stderr.log").read_text() == "oops\n"
    drain_logs(rt, "a1")
    wait_for(lambda: rt.job("a1").state == "done", rt=rt)
    final = reports[-1]
    assert final["kind"] == StatusKind.EXITED and final["exit_code"] == 0 and final["reason"] is None
    rt.start(order("a1", "pass"))  # a replayed order does not start it again
    assert reports.kinds("a1") == [StatusKind.STARTED, StatusKind.EXITED]


def test_agent_env_secrets_are_not_inherited(tmp_path, monkeypatch):
    monkeypatch.setenv("GPUPOOL_AGENT_TOKEN", "node-secret")
    rt, reports = make(tmp_path)
    rt.start(order("a1", "import os; print(os.environ.get('GPUPOOL_AGENT_TOKEN'))"))
    wait_for(lambda: rt.job("a1").state == "exited", rt=rt)
    assert (rt.job("a1").job_dir / "stdout.log").read_text() == "None\n"


def test_nonzero_exit_and_final_report_waits_for_logs(tmp_path):
    rt, reports = make(tmp_path)
    rt.start(order("a2", "print('x'); raise SystemExit(3)"))
    wait_for(lambda: rt.job("a2").state == "exited", rt=rt)
    rt.tick()
    assert reports.kinds("a2") == [StatusKind.STARTED]  # logs not shipped yet
    wait_for(lambda: rt.job("a2").state == "done", rt=rt)  # flush window passed
    assert reports[-1]["exit_code"] == 3 and reports[-1]["reason"] == "exited with code 3"


def test_failed_to_start(tmp_path):
    rt, reports = make(tmp_path)
    o = order("a3", "pass")
    rt.start(o.model_copy(update={"argv": ["no-such-binary-xyz"]}))
    rt.start(o.model_copy(update={"attempt_id": "a4", "workdir": str(tmp_path / "missing")}))
    assert [r["kind"] for r in reports] == [StatusKind.FAILED_TO_START] * 2
    assert "command not found" in reports[0]["reason"] and "no-such-binary-xyz" in reports[0]["reason"]
    assert "does not exist" in reports[1]["reason"]


def test_stop_sigterm_then_sigkill_after_grace(tmp_path):
    rt, reports = make(tmp_path)
    stubborn = ("import signal,time,sys; signal.signal(signal.SIGTERM, lambda *a: print('term', flush=True));"
                "print('up', flush=True); time.sleep(60)")
    polite = "import time; print('up', flush=True); time.sleep(60)"
    rt.start(order("s1", stubborn, grace_s=0.5))
    rt.start(order("s2", polite))
    for a in ("s1", "s2"):
        wait_for(lambda a=a: b"up" in (rt.job(a).job_dir / "stdout.log").read_bytes())
    t0 = time.monotonic()
    assert rt.stop("s1", "cancelled by user", 0.5)
    assert rt.stop("s2", "cancelled by user", 5.0)
    assert not rt.stop("nope", "x", 1.0)
    wait_for(lambda: rt.job("s1").state != "running" and rt.job("s2").state != "running", rt=rt)
    assert time.monotonic() - t0 < 4.0
    assert rt.job("s1").record["exit"]["exit_code"] == 137  # SIGKILL after the grace
    assert rt.job("s2").record["exit"]["exit_code"] == 143  # SIGTERM was enough
    assert b"term" in (rt.job("s1").job_dir / "stdout.log").read_bytes()
    for a in ("s1", "s2"):
        drain_logs(rt, a)
    wait_for(lambda: rt.job("s1").state == "done" and rt.job("s2").state == "done", rt=rt)
    killed = [r for r in reports if r["kind"] == StatusKind.KILLED]
    assert {r["attempt"] for r in killed} == {"s1", "s2"}
    assert all(r["reason"] == "cancelled by user" for r in killed)


def test_restart_readopts_running_job_and_gets_its_exit_code(tmp_path):
    rt, reports = make(tmp_path)
    flag = tmp_path / "go"
    code = (f"import os,time\nprint('before', flush=True)\nwhile not os.path.exists({str(flag)!r}): time.sleep(0.05)\n"
            "print('after', flush=True)\nraise SystemExit(7)")
    rt.start(order("r1", code))
    wait_for(lambda: b"before" in (rt.job("r1").job_dir / "stdout.log").read_bytes())
    pid = rt.job("r1").record["pid"]
    del rt  # the agent "dies" (its Popen object is gone; the job runs on)
    rt2, reports2 = make(tmp_path)
    assert rt2.adopt_all() == ["r1"]
    assert rt2.job("r1").proc.adopted and rt2.job("r1").proc.pid == pid
    assert [m.attempt_id for m in rt2.managed_jobs()] == ["r1"]
    flag.write_text("1")
    wait_for(lambda: rt2.job("r1").state == "done", rt=rt2)
    assert reports2[-1]["kind"] == StatusKind.EXITED and reports2[-1]["exit_code"] == 7
    assert (rt2.job("r1").job_dir / "stdout.log").read_text() == "before\nafter\n"
    # and a third start finds it finished: nothing adopted, nothing reported again
    rt3, reports3 = make(tmp_path)
    assert rt3.adopt_all() == [] and reports3 == []


def test_adopt_refuses_recycled_pid(tmp_path):
    rt, _ = make(tmp_path)
    rt.start(order("p1", "import time; time.sleep(30)"))
    job = rt.job("p1")
    job.record["start_ticks"] = (job.record["start_ticks"] or 0) + 12345  # "another" process
    rt.state.save_record("p1", job.record)
    rt2, _ = make(tmp_path)
    assert rt2.adopt_all() == []
    rt.stop("p1", "cleanup", 0)


def test_memory_watchdog_stops_only_the_offender(tmp_path):
    rt, reports = make(tmp_path, watchdog_grace_s=0.2)
    rt.start(order("m1", "import time; time.sleep(30)", grace_s=1.0))
    rt.start(order("m2", "import time; time.sleep(30)", grace_s=1.0))
    usage = {("m1", UUID): 1500.0, ("m2", UUID): 900.0}
    rt.enforce_memory(usage)
    time.sleep(0.25)
    rt.enforce_memory(usage)
    wait_for(lambda: rt.job("m1").state != "running", rt=rt)
    wait_for(lambda: rt.job("m1").state == "done", rt=rt)
    assert rt.job("m2").state == "running"
    (killed,) = [r for r in reports if r["kind"] == StatusKind.KILLED]
    assert killed["attempt"] == "m1"
    assert killed["reason"] == "slice memory exceeded: used 1500 MiB > limit 1000 MiB"
    rt.stop("m2", "cleanup", 0)


def test_readiness_probe_reports_endpoint(tmp_path):
    rt, reports = make(tmp_path)
    server = ("import http.server,os\n"
              "class H(http.server.BaseHTTPRequestHandler):\n"
              "    def do_GET(self):\n"
              "        self.send_response(200 if self.path == '/health' else 404); self.end_headers()\n"
              "    def log_message(self, *a): pass\n"
              "http.server.HTTPServer(('127.0.0.1', int(os.environ['GPUPOOL_PORT'])), H).serve_forever()")
    rt.start(order("h1", server, port_count=1, readiness_path="/health"))
    wait_for(lambda: StatusKind.READY in reports.kinds("h1"), rt=rt)
    ready = [r for r in reports if r["kind"] == StatusKind.READY][0]
    assert ready["endpoint"] == f"http://127.0.0.1:{rt.job('h1').record['ports'][0]}"
    rt.stop("h1", "done", 0)
    wait_for(lambda: rt.job("h1").state != "running", rt=rt)


def test_python_means_agent_interpreter(tmp_path):
    rt, _ = make(tmp_path)
    rt.start(order("i1", "import sys; print(sys.executable)"))
    wait_for(lambda: rt.job("i1").state == "exited", rt=rt)
    assert (rt.job("i1").job_dir / "stdout.log").read_text().strip() == sys.executable


def test_order_for_an_accelerator_not_on_this_node_fails_to_start(tmp_path):
    from agent.devices.simulated import SimulatedBackend

    backend = SimulatedBackend(gpus=1, model="T4", node="elsewhere")
    rt, reports = make(tmp_path, backend=backend)
    rt.start(order("u1", "pass"))
    (r,) = reports
    assert r["kind"] == StatusKind.FAILED_TO_START and f"{UUID} not on node n1" in r["reason"]
    uuid = backend.discover()[0].uuid
    good = order("u2", "import time; time.sleep(0.2)")
    good.slices[0].accelerator_uuid = uuid
    rt.start(good)
    assert reports[-1]["kind"] == StatusKind.STARTED
    assert [p.accelerator_uuid for p in backend.processes()] == [uuid]  # attached for telemetry
