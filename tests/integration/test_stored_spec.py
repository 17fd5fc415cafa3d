"""The spec is validated once, at submit; the scheduler, launch and the agent work from what was
stored, so a model directory that only exists on the node is never opened by the server."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.integration.e2e_agent_support import FINAL, AgentProc, wait_until
from tests.support.fixtures import server_fixture

ROOT = Path(__file__).resolve().parents[2]
server = server_fixture()


def test_only_submit_parses_specs_on_the_server() -> None:
    """No control-plane module but the submit use case (and the CLI, client-side) parses a spec."""
    parsers = set()
    for path in (ROOT / "controlplane").rglob("*.py"):
        tree = ast.parse(path.read_text())
        if any(isinstance(n, ast.Name | ast.Attribute) and getattr(n, "id", getattr(n, "attr", "")) ==
               "parse_job_spec" for n in ast.walk(tree)):
            parsers.add(path.relative_to(ROOT).as_posix())
    assert parsers <= {"controlplane/services/jobs.py", "controlplane/cli/specfile.py"}, parsers


def test_packaged_job_runs_from_stored_data_without_its_model_on_the_server(server, tmp_path) -> None:  # noqa: ANN001
    model = tmp_path / "only-on-the-node" / "model"  # never created: the server must not need it
    spec = {"kind": "evaluate", "name": "stored", "model_path": str(model), "prompts": ["hi"],
            "resources": {"gpu": 0.25, "cpu_milli": 500, "memory_mib": 512},
            "retry": {"max_attempts": 1}}
    with server.client() as c:
        r = c.post("/api/v1/jobs", json=spec)
        assert r.status_code == 201, r.text
        job = r.json()
        assert job["spec"]["model_path"] == str(model) and job["spec"]["resources"]["gpu"] == 0.25
        agent = AgentProc(server.url, server.bootstrap_token, tmp_path, "stored-node").start()
        try:
            done = wait_until(lambda: (j := c.get(f"/api/v1/jobs/{job['id']}").json())["status"] in FINAL
                              and j, 240, "the job to end")
            log = c.get(f"/api/v1/jobs/{job['id']}/logs").text
        finally:
            agent.stop()
    # placed and started from the stored request and spec; the workload read its spec file on the
    # node and refused the missing model there, with a clear message (exit 2, no traceback)
    assert done["attempt"] == 1 and done["placement"][0]["node"] == "stored-node"
    assert done["status"] == "failed" and done["exit_code"] == 2, (done, log)
    assert str(model) in log and "Traceback" not in log, log


def test_the_server_never_estimates_from_model_files(server, tmp_path) -> None:  # noqa: ANN001
    """A packaged spec without resources is refused without touching its model directory (here a
    config.json that cannot be read as a file): resources come from the CLI, where the model is."""
    model = tmp_path / "model"
    (model / "config.json").mkdir(parents=True)
    with server.client() as c:
        r = c.post("/api/v1/jobs", json={"kind": "inference", "name": "est", "model_path": str(model)})
    assert r.status_code == 422
    assert "resources.gpu" in r.json()["detail"] and "gpupool CLI" in r.json()["detail"]


def test_an_inference_endpoint_gets_a_key_only_its_team_sees(server) -> None:  # noqa: ANN001
    with server.client() as c:
        job = c.post("/api/v1/jobs", json={"kind": "inference", "name": "served", "model_path": "/m",
                                           "resources": {"gpu": 1}}).json()
        key = job["spec"]["env"]["GPUPOOL_API_KEY"]
        assert len(key) >= 32
        listed = c.get("/api/v1/jobs").json()["items"]  # pages leave specs (and keys) out
        assert all(j["spec"] is None for j in listed)
        c.post(f"/api/v1/jobs/{job['id']}/cancel")
