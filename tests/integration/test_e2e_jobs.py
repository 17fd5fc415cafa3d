"""End to end on one node: server and agent as separate processes on 127.0.0.1 (SQLite).

A job runs to success with its logs and progress; one exits non-zero; one is cancelled; one that
goes over its memory slice is stopped with the reason while its neighbour on the same GPU runs on.
"""

from __future__ import annotations

import pytest

from tests.integration.e2e_agent_support import AgentProc, Api, ServerProc, py_job, wait_file_code, wait_until

pytestmark = [pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e-jobs")
    server = ServerProc(root, env={"GPUPOOL_HEARTBEAT_INTERVAL_S": "0.5", "GPUPOOL_HEARTBEAT_TIMEOUT_S": "10",
                                   "GPUPOOL_SCHEDULER_INTERVAL_S": "0.2", "GPUPOOL_LIVENESS_INTERVAL_S": "1"})
    server.start()
    agent = AgentProc(server.url, server.bootstrap_token, root, "e2e-n1", gpus="1x1xH100-80GB")
    try:
        agent.start().wait_connected()
        yield server, agent, Api(server.url, server.admin_token), root
    finally:
        agent.stop()
        agent.reap_jobs()
        server.stop()


def test_job_succeeds_with_logs_progress_and_enforcement(pool):
    server, agent, api, _ = pool
    code = ("import os,sys,json\nprint('hello from', os.environ['GPUPOOL_JOB_NAME'])\n"
            "print('GPUPOOL_PROGRESS ' + json.dumps({'step': 5, 'of': 10}))\n"
            "print('visible', os.environ['CUDA_VISIBLE_DEVICES'])\nprint('warn', file=sys.stderr)\n")
    job = api.submit(py_job("ok-job", code))
    done = api.wait_status(job["id"], "succeeded")
    assert done["exit_code"] == 0
    logs = wait_until(lambda: (t := api.logs(job["id"])) and "hello from ok-job" in t and t, 10, "logs")
    assert "warn" in logs
    uuid = done["placement"][0]["slices"][0]["accelerator_uuid"]
    assert f"visible {uuid}" in logs
    assert done["progress"] == {"step": 5, "of": 10}
    running = [e for e in api.events(job["id"]) if e["kind"] == "running"]
    assert running and running[0]["data"]["enforcement"]["visibility"] == f"CUDA_VISIBLE_DEVICES={uuid}"
    assert "watchdog" in running[0]["data"]["enforcement"]


def test_nonzero_exit_fails_the_job(pool):
    _, _, api, _ = pool
    job = api.submit(py_job("bad-job", "import sys; print('about to fail'); sys.exit(3)"))
    done = api.wait_status(job["id"], "failed")
    assert done["exit_code"] == 3
    assert "about to fail" in wait_until(lambda: api.logs(job["id"]), 10, "logs")


def test_cancel_stops_the_running_process(pool):
    _, agent, api, root = pool
    job = api.submit(py_job("long-job", "import time\nprint('up', flush=True)\ntime.sleep(120)"))
    api.wait_status(job["id"], "running")
    wait_until(lambda: "up" in api.logs(job["id"]), 15, "job output")
    api.cancel(job["id"])
    done = api.wait_status(job["id"], "cancelled", timeout=20)
    assert done["status"] == "cancelled"
    assert not agent.job_alive(job["id"])  # slices are freed only once the process is gone


def test_memory_over_slice_is_stopped_and_neighbour_keeps_running(pool):
    _, agent, api, root = pool
    release = root / "release-neighbour"
    hog = ("import os,time\nopen(os.environ['GPUPOOL_SIM_MEMORY_FILE'],'w').write('30000')\n"
           "print('limit', os.environ['GPUPOOL_MEMORY_MIB'], flush=True)\ntime.sleep(120)")
    calm = ("import os,time\nopen(os.environ['GPUPOOL_SIM_MEMORY_FILE'],'w').write('1000')\n"
            + wait_file_code(release) + "print('neighbour done')\n")
    neighbour = api.submit(py_job("calm", calm))
    hogger = api.submit(py_job("hog", hog))
    api.wait_status(neighbour["id"], "running")
    failed = api.wait_status(hogger["id"], "failed", timeout=30)
    limit = failed["placement"][0]["slices"][0]["memory_mib"]
    assert failed["status_reason"] == f"slice memory exceeded: used 30000 MiB > limit {limit} MiB"
    assert (failed["placement"][0]["slices"][0]["accelerator_uuid"]
            == api.job(neighbour["id"])["placement"][0]["slices"][0]["accelerator_uuid"])
    assert api.job(neighbour["id"])["status"] == "running"
    release.write_text("go")
    assert api.wait_status(neighbour["id"], "succeeded")["exit_code"] == 0


def test_served_job_becomes_ready_with_its_endpoint(pool):
    _, _, api, _ = pool
    server = ("import http.server,os\n"
              "class H(http.server.BaseHTTPRequestHandler):\n"
              "    def do_GET(self):\n"
              "        self.send_response(200 if self.path == '/health' else 404); self.end_headers()\n"
              "    def log_message(self, *a): pass\n"
              "http.server.HTTPServer(('0.0.0.0', int(os.environ['GPUPOOL_PORT'])), H).serve_forever()")
    job = api.submit(py_job("server", server, ports=1, readiness_path="/health"))
    ready = wait_until(lambda: (j := api.job(job["id"]))["endpoint"] and j, 30, "endpoint")
    assert ready["endpoint"].startswith("http://127.0.0.1:")
    import httpx

    assert httpx.get(ready["endpoint"] + "/health", timeout=5).status_code == 200
    assert any(e["kind"] == "ready" for e in api.events(job["id"]))
    api.cancel(job["id"])
    api.wait_status(job["id"], "cancelled", timeout=30)
