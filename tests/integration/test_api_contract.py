"""The typed API contract: a valid OpenAPI document that declares a response model and every error
of each route, a response checker that really checks, and the input rules that keep bad integers,
ids and strings away from the database (each case here was a 500 or a wrong match before)."""

from __future__ import annotations

import pytest
from fastapi.responses import PlainTextResponse
from fastapi.routing import APIRoute
from openapi_spec_validator import validate

from controlplane.api import routes_admin, routes_agent, routes_jobs, routes_nodes
from tests.support.fake_agent import FakeAgent
from tests.support.fixtures import server_fixture
from tests.support.openapi_check import Nonconforming, checker_for

server = server_fixture()
BIG = 2**63  # one past the largest 64-bit integer the database stores
PROBLEM = "application/problem+json"
SPEC = {"name": "contract", "command": ["true"], "resources": {"gpu": 8}}


def _problem(r, status: int, field: str | None = None) -> None:  # noqa: ANN001
    assert r.status_code == status, (r.request.method, r.request.url, r.status_code, r.text)
    assert r.headers["content-type"].startswith(PROBLEM)
    if field is not None:
        assert field in [e["field"] for e in r.json().get("errors", [])], r.json()


def test_every_route_declares_its_answer_and_errors() -> None:
    routers = (routes_jobs.router, routes_nodes.router, routes_admin.router, routes_agent.router)
    api = [r for router in routers for r in router.routes if isinstance(r, APIRoute)]
    assert len(api) >= 27
    for route in api:
        text = route.response_class is PlainTextResponse
        assert route.response_model is not None or text, route.path
        declared = {int(c) for c in route.responses}
        assert {401, 429, 503} <= declared, (route.path, declared)
        if route.dependant.query_params or route.dependant.body_params or route.dependant.header_params:
            assert 422 in declared, route.path
        for code, entry in route.responses.items():
            if int(code) >= 400:
                assert list(entry["content"]) == [PROBLEM], (route.path, code)


def test_openapi_document_validates_and_describes_errors(server) -> None:  # noqa: ANN001
    doc = checker_for(server.url).doc
    validate(doc)
    for path, item in doc["paths"].items():
        for method, op in item.items():
            ok = [c for c in op["responses"] if c.startswith("2")]
            assert ok and all(op["responses"][c].get("content") for c in ok), (method, path)
            if path.startswith("/api/v1"):
                assert "401" in op["responses"] and "422" in op["responses"] or not (
                    op.get("parameters") or op.get("requestBody")), (method, path)
    submit = doc["paths"]["/api/v1/jobs"]["post"]
    kinds = {v["properties"]["kind"]["const"] for v in
             submit["requestBody"]["content"]["application/json"]["schema"]["oneOf"]}
    assert kinds == {"custom", "pretrain", "finetune", "evaluate", "inference"}


def test_the_checker_refuses_what_the_document_does_not_say(server) -> None:  # noqa: ANN001
    check = checker_for(server.url).check
    job = b'{"id": "1", "name": "x"}'  # far from a Job
    with pytest.raises(Nonconforming, match="does not match"):
        check("GET", "/api/v1/jobs/1", 200, "application/json", job)
    with pytest.raises(Nonconforming, match="not declared"):
        check("GET", "/api/v1/jobs/1", 409, PROBLEM, b"{}")
    with pytest.raises(Nonconforming, match="media type"):
        check("GET", "/api/v1/jobs/1", 404, "text/html", b"<p>")
    with pytest.raises(Nonconforming, match="date-time"):
        check("GET", "/api/v1/teams", 200, "application/json",
              b'{"items": [{"id": "1", "name": "t", "created_at": "yesterday"}]}')
    check("GET", "/dashboard/anything", 200, "text/html", b"<p>")  # not an API route: not checked
    with server.client() as c:
        before = checker_for(server.url).checked
        c.get("/api/v1/teams")
        c.get("/api/v1/jobs/999999999")
        assert checker_for(server.url).checked == before + 2  # the test clients check every answer


def test_integers_beyond_the_database_are_422(server) -> None:  # noqa: ANN001
    with server.client() as c:
        for path in ("/api/v1/jobs", "/api/v1/events"):
            for cursor in (str(BIG), "²", "+5", "0_2", "١", "-1", "05"):
                _problem(c.get(path, params={"cursor": cursor}), 422, "cursor")
        _problem(c.patch("/api/v1/queues/default", json={"team": ["x"]}), 422, "team")
        _problem(c.patch("/api/v1/queues/default", json={"weight": "heavy"}), 422, "weight")
        _problem(c.patch("/api/v1/queues/default", json={"guarantee_milli": True}), 422, "guarantee_milli")
        _problem(c.patch("/api/v1/queues/default", json={"guarantee_milli": None}), 422, "guarantee_milli")
        _problem(c.patch("/api/v1/queues/default", json={"limit_milli": 1.5}), 422, "limit_milli")
        _problem(c.patch("/api/v1/queues/default", json={"limit_milli": BIG}), 422, "limit_milli")
        _problem(c.patch("/api/v1/queues/default", json={"name": "other"}), 422, "name")
        assert c.patch("/api/v1/queues/default", json={"limit_milli": None}).json()["limit_milli"] is None
    boot = {"Authorization": f"Bearer {server.bootstrap_token}"}
    node = {"hostname": "bounds-node", "cpu_milli": 1000, "memory_mib": 1000}
    acc = {"uuid": "GPU-bounds", "index": 0, "model": "m", "memory_mib": 1000}
    with server.client() as c:
        for field, value in (("index", BIG), ("numa_node", BIG), ("numa_node", -2), ("memory_mib", BIG)):
            _problem(c.post("/api/v1/agent/register", headers=boot,
                            json={"node": node, "accelerators": [{**acc, field: value}]}),
                     422, f"accelerators.0.{field}")
        for hostname in ("a\x00b", ""):  # a name no route could address
            _problem(c.post("/api/v1/agent/register", headers=boot,
                            json={"node": {**node, "hostname": hostname}, "accelerators": []}),
                     422, "node.hostname")
    agent = FakeAgent(server.url, server.bootstrap_token, "bounds-agent", gpus=1)
    agent.register()
    report = {"seq": 1, "job_id": "1", "attempt_id": "1", "kind": "exited", "ts": 0}
    for field, value in (("seq", BIG), ("attempt_id", str(BIG * 10)), ("attempt_id", "²"),
                         ("job_id", "١"), ("rank", BIG), ("exit_code", BIG), ("pid", -1)):
        _problem(agent.http.post("/api/v1/agent/status", json={
            "node_id": agent.node_id, "reports": [{**report, field: value}]}), 422, f"reports.0.{field}")
    chunk = {"job_id": "1", "attempt_id": "1", "offset": 0, "data": "x"}
    for field, value in (("attempt_id", "²"), ("attempt_id", "99999999999999999999"), ("offset", BIG),
                         ("offset", -1), ("rank", BIG)):
        _problem(agent.http.post("/api/v1/agent/logs", json={
            "node_id": agent.node_id, "chunks": [{**chunk, field: value}]}), 422, f"chunks.0.{field}")
    _problem(agent.http.get("/api/v1/agent/assignments", params={"epoch": BIG}), 422, "epoch")
    agent.close()


def test_ids_are_canonical(server) -> None:  # noqa: ANN001
    with server.client() as c:
        job_id = c.post("/api/v1/jobs", json=SPEC).json()["id"]
        assert c.get(f"/api/v1/jobs/{job_id}").status_code == 200
        for other in (f"+{job_id}", f"0{job_id}", f" {job_id}", f"{job_id} ",
                      "".join(chr(0x0660 + int(d)) for d in job_id),  # Arabic-Indic digits
                      "_".join(job_id) if len(job_id) > 1 else f"0_{job_id}", "²", str(BIG)):
            _problem(c.get(f"/api/v1/jobs/{other}"), 404)
            _problem(c.post(f"/api/v1/jobs/{other}/cancel"), 404)
            _problem(c.get("/api/v1/events", params={"job": other}), 404)
            _problem(c.delete(f"/api/v1/tokens/{other}"), 404)
        assert c.get(f"/api/v1/jobs/{job_id}").json()["status"] == "pending"  # nothing cancelled


def test_nul_never_reaches_the_database(server) -> None:  # noqa: ANN001
    with server.client() as c:
        before = len(c.get("/api/v1/jobs", params={"limit": 1000}).json()["items"])
        _problem(c.post("/api/v1/jobs", json={**SPEC, "env": {"A": "x\x00y"}}), 422, "env.A")
        _problem(c.post("/api/v1/jobs", json={**SPEC, "command": ["echo", "\x00"]}), 422, "command.1")
        _problem(c.post("/api/v1/tokens", json={"user": "admin", "name": "a\x00"}), 422, "name")
        _problem(c.get("/api/v1/nodes/a%00b"), 422, "name")
        _problem(c.get("/api/v1/events", params={"node": "a\x00"}), 422, "node")
        _problem(c.get("/api/v1/jobs", params={"queue": "a\x00"}), 422, "queue")
        for path in ("/api/v1/jobs", "/api/v1/teams"):  # bytes that are not UTF-8 text
            _problem(c.post(path, content=b"\xff\xfe{", headers={"content-type": "application/json"}),
                     422, "body")
        assert len(c.get("/api/v1/jobs", params={"limit": 1000}).json()["items"]) == before


def test_list_pages_carry_specs_only_when_asked(server) -> None:  # noqa: ANN001
    with server.client() as c:
        job_id = c.post("/api/v1/jobs", json=SPEC).json()["id"]
        assert c.get(f"/api/v1/jobs/{job_id}").json()["spec"]["name"] == "contract"
        page = c.get("/api/v1/jobs", params={"limit": 5}).json()
        assert page["items"] and all(j["spec"] is None for j in page["items"])
        full = c.get("/api/v1/jobs", params={"limit": 5, "include": "spec"}).json()
        assert all(j["spec"]["name"] for j in full["items"])
        assert [j["id"] for j in full["items"]] == [j["id"] for j in page["items"]]
        _problem(c.get("/api/v1/jobs", params={"limit": 101, "include": "spec"}), 422, "limit")
        _problem(c.get("/api/v1/jobs", params={"limit": 1001}), 422, "limit")
        _problem(c.get("/api/v1/jobs", params={"include": "everything"}), 422, "include")
