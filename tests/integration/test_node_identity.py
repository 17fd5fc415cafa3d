"""Node identity: bootstrap tokens with expiry, single use and a node-name pattern; re-registration
only with the node's own token (or an admin's); accelerators never move from a live node;
DNS-1123 hostnames; token listing and revocation; disabling users (API and CLI, a real server on
SQLite and PostgreSQL)."""

from __future__ import annotations

import uuid

import httpx
import pytest
from sqlalchemy import select, update

from controlplane.db.base import now
from controlplane.db.database import Database
from controlplane.db.models import DashboardSessionRow, NodeRow, TokenRow, UserRow
from tests.support.cli import admin_cli
from tests.support.dashboard import sign_in
from tests.support.fixtures import server_fixture
from tests.support.openapi_check import conformance_hooks

pytestmark = pytest.mark.timeout(120)
server = server_fixture()


def _body(hostname: str, uuids: list[str]) -> dict:
    return {"node": {"hostname": hostname, "cpu_milli": 4000, "memory_mib": 16000},
            "accelerators": [{"uuid": u, "index": i, "model": "T4", "memory_mib": 15360}
                             for i, u in enumerate(uuids)]}


def _register(server, token: str, hostname: str, uuids: list[str] | None = None) -> httpx.Response:  # noqa: ANN001
    with httpx.Client(base_url=server.url, timeout=30, event_hooks=conformance_hooks(server.url)) as c:
        return c.post("/api/v1/agent/register", json=_body(hostname, uuids if uuids is not None else [f"GPU-{hostname}"]),
                      headers={"Authorization": f"Bearer {token}"})


def _name() -> str:
    return f"gpu-{uuid.uuid4().int % 10**9}"


def _bootstrap(server, **rules) -> dict:  # noqa: ANN001, ANN003
    with server.client() as admin:
        r = admin.post("/api/v1/bootstrap-tokens", json=rules)
        assert r.status_code == 201, r.text
        return r.json()


def _db(server):  # noqa: ANN001, ANN202
    return Database(server.db_url)


def test_bootstrap_tokens_expire_are_used_up_and_keep_to_their_pattern(server) -> None:  # noqa: ANN001
    once = _bootstrap(server, single_use=True, name_pattern="gpu-[0-9]+", expires_in_s=3600, name="rack 4")
    assert once["single_use"] and once["name_pattern"] == "gpu-[0-9]+" and once["expires_at"]
    r = _register(server, once["token"], "cpu-1")
    assert r.status_code == 403 and "gpu-[0-9]+" in r.json()["detail"] and "'cpu-1'" in r.json()["detail"]
    first = _name()
    assert _register(server, once["token"], first).status_code == 200  # a refused name did not use it up
    r = _register(server, once["token"], _name())
    assert r.status_code == 401 and "used" in r.json()["detail"]

    expiring = _bootstrap(server, expires_in_s=3600)
    db = _db(server)
    try:
        with db.tx() as s:  # an hour later
            s.execute(update(TokenRow).where(TokenRow.id == int(expiring["id"])).values(expires_at=now() - 1))
    finally:
        db.dispose()
    r = _register(server, expiring["token"], _name())
    assert r.status_code == 401 and "expired" in r.json()["detail"]

    revoked = _bootstrap(server)
    with server.client() as admin:
        states = {t["id"]: t["state"] for t in admin.get("/api/v1/bootstrap-tokens").json()["items"]}
        assert (states[once["id"]], states[expiring["id"]], states[revoked["id"]]) == ("used", "expired", "active")
        assert admin.delete(f"/api/v1/bootstrap-tokens/{revoked['id']}").status_code == 200
        assert admin.delete(f"/api/v1/bootstrap-tokens/{revoked['id']}").status_code == 404
    assert _register(server, revoked["token"], _name()).status_code == 401
    with server.client() as admin:  # a bad pattern is refused when the token is made
        r = admin.post("/api/v1/bootstrap-tokens", json={"name_pattern": "gpu-[0-9"})
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "name_pattern"


def test_only_the_node_itself_or_an_admin_re_registers_it(server) -> None:  # noqa: ANN001
    name, other = _name(), _name()
    first = _register(server, server.bootstrap_token, name)
    assert first.status_code == 200
    node_token = first.json()["node_token"]
    other_token = _register(server, server.bootstrap_token, other).json()["node_token"]

    r = _register(server, server.bootstrap_token, name)  # the old takeover: now refused, token untouched
    assert r.status_code == 409 and "already registered" in r.json()["detail"] and "node token" in r.json()["detail"]
    r = _register(server, other_token, name)
    assert r.status_code == 403 and other in r.json()["detail"]
    again = _register(server, node_token, name)  # the agent restarting with its state
    assert again.status_code == 200 and again.json()["node_id"] == first.json()["node_id"]
    with httpx.Client(base_url=server.url, timeout=30) as c:  # its earlier token is revoked
        hb = {"node_id": first.json()["node_id"], "ts": now(), "samples": []}
        assert c.post("/api/v1/agent/heartbeat", json=hb,
                      headers={"Authorization": f"Bearer {node_token}"}).status_code == 401
        assert c.post("/api/v1/agent/heartbeat", json=hb,
                      headers={"Authorization": f"Bearer {again.json()['node_token']}"}).status_code == 200
    assert _register(server, server.admin_token, name).status_code == 200


def test_an_accelerator_of_a_live_node_never_moves(server) -> None:  # noqa: ANN001
    a, b = _name(), _name()
    gpu = f"GPU-shared-{uuid.uuid4().hex[:8]}"
    assert _register(server, server.bootstrap_token, a, [gpu]).status_code == 200
    r = _register(server, server.bootstrap_token, b, [gpu])
    assert r.status_code == 409 and gpu in r.json()["detail"] and a in r.json()["detail"]
    with server.client() as admin:
        assert admin.get(f"/api/v1/nodes/{b}").status_code == 404  # nothing half-registered
    r = _register(server, server.bootstrap_token, b, [gpu, gpu])
    assert r.status_code == 422 and "twice" in r.json()["detail"]
    db = _db(server)
    try:
        with db.tx() as s:  # node a is lost (no heartbeats): its idle accelerator may move
            s.execute(update(NodeRow).where(NodeRow.name == a).values(state="not_ready"))
    finally:
        db.dispose()
    assert _register(server, server.bootstrap_token, b, [gpu]).status_code == 200
    with server.client() as admin:
        assert [x["uuid"] for x in admin.get(f"/api/v1/nodes/{b}").json()["accelerators"]] == [gpu]
        assert admin.get(f"/api/v1/nodes/{a}").json()["accelerators"] == []


@pytest.mark.parametrize("hostname", ["Node-1", "node_1", "-node", "node-", "a..b", "x" * 64, "a." + "b" * 250,
                                      "x'+alert(1)+'"])
def test_hostnames_are_dns_1123_subdomains(server, hostname: str) -> None:  # noqa: ANN001
    r = _register(server, server.bootstrap_token, hostname, ["GPU-bad-name"])
    assert r.status_code == 422, r.text
    assert r.json()["errors"][0]["field"] == "node.hostname" and "DNS-1123" in r.json()["detail"]


def test_good_hostnames_register(server) -> None:  # noqa: ANN001
    for hostname in (f"n{uuid.uuid4().hex[:6]}.rack-2.example", "x" * 63 + f".{uuid.uuid4().hex[:6]}"):
        assert _register(server, server.bootstrap_token, hostname).status_code == 200


def test_disabled_users_lose_their_tokens_and_sessions_until_enabled(server) -> None:  # noqa: ANN001
    team = f"d{uuid.uuid4().hex[:8]}"
    with server.client() as admin:
        admin.post("/api/v1/teams", json={"name": team})
        admin.post("/api/v1/users", json={"name": f"{team}-u", "team": team})
        token = admin.post("/api/v1/tokens", json={"user": f"{team}-u", "name": "t"}).json()["token"]
    with httpx.Client(base_url=server.url, timeout=30) as browser:
        assert sign_in(browser, token).status_code == 303
    with server.client() as admin:
        r = admin.post(f"/api/v1/users/{team}-u/disable")
        assert r.status_code == 200 and r.json()["disabled"] is True
        assert any(u["name"] == f"{team}-u" and u["disabled"] for u in admin.get("/api/v1/users").json()["items"])
        me = admin.get("/api/v1/whoami").json()["user"]
        r = admin.post(f"/api/v1/users/{me}/disable")
        assert r.status_code == 409 and "yourself" in r.json()["detail"]
        assert admin.post("/api/v1/users/nobody/disable").status_code == 404
    db = _db(server)
    try:
        with db.read() as s:
            uid = s.scalar(select(UserRow.id).where(UserRow.name == f"{team}-u"))
            revoked = list(s.scalars(select(DashboardSessionRow.revoked).where(DashboardSessionRow.user_id == uid)))
        assert revoked == [True]  # the session opened above ended
    finally:
        db.dispose()
    with server.client(token) as member:
        r = member.get("/api/v1/jobs")
        assert r.status_code == 401 and "disabled" in r.json()["detail"]
        with server.client() as admin:
            assert admin.post(f"/api/v1/users/{team}-u/enable").json()["disabled"] is False
        assert member.get("/api/v1/jobs").status_code == 200
        assert member.post(f"/api/v1/users/{team}-u/disable").status_code == 403


def test_the_cli_manages_bootstrap_tokens_tokens_and_users(server, monkeypatch, tmp_path) -> None:  # noqa: ANN001
    cli = admin_cli(server, monkeypatch, tmp_path)

    code, out, err = cli("admin", "bootstrap-token", "create", "--expires-in", "1d", "--single-use",
                         "--name-pattern", "gpu-[0-9]+", "--quiet")
    assert code == 0, err
    secret = out.strip()
    assert secret.startswith("gpb_")
    assert _register(server, secret, "web-1").status_code == 403
    assert _register(server, secret, _name()).status_code == 200
    code, out, _ = cli("admin", "bootstrap-token", "list")
    assert code == 0 and "used" in out and "gpu-[0-9]+" in out
    code, out, _ = cli("admin", "bootstrap-token", "create", "--expires-in", "never")
    assert code == 0 and "never expires" in out
    token_id = out.split("bootstrap token ")[1].split()[0]
    code, out, _ = cli("admin", "bootstrap-token", "revoke", token_id)
    assert code == 0 and f"revoked bootstrap token {token_id}" in out
    code, _, err = cli("admin", "bootstrap-token", "revoke", token_id)
    assert code == 1 and "404" in err

    team = f"c{uuid.uuid4().hex[:8]}"
    with server.client() as admin:
        admin.post("/api/v1/teams", json={"name": team})
        admin.post("/api/v1/users", json={"name": f"{team}-u", "team": team})
    code, out, err = cli("token", "create", "--user", f"{team}-u", "--name", "ci", "--quiet")
    assert code == 0, err
    user_token = out.strip()
    code, out, _ = cli("token", "list")
    assert code == 0 and f"{team}-u" in out and "ci" in out
    with server.client() as admin:
        tid = next(t["id"] for t in admin.get("/api/v1/tokens").json()["items"] if t["user"] == f"{team}-u")
    code, out, _ = cli("admin", "user", "disable", f"{team}-u")
    assert code == 0 and "disabled" in out
    code, out, _ = cli("admin", "user", "list")
    assert code == 0 and "disabled" in out
    code, out, _ = cli("admin", "user", "enable", f"{team}-u")
    assert code == 0
    code, out, _ = cli("token", "revoke", tid)
    assert code == 0 and f"revoked token {tid}" in out
    with server.client(user_token) as member:
        assert member.get("/api/v1/whoami").status_code == 401
