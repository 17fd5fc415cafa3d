"""Dashboard security on a real database: server-side sessions, CSRF, no inline script, token expiry.

In-process (TestClient) on SQLite and PostgreSQL. Expiry and idleness are reached by moving the
stored times into the past (no sleeps); revocation and disabling go through the real paths.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import time

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from controlplane.db.models import DashboardSessionRow, TokenRow, UserRow
from controlplane.server import create_app
from controlplane.settings import Settings
from tests.support.dashboard import csrf_from, post_form, sign_in
from tests.support.db import database
from tests.support.factories import make_node
from tests.support.server import REPO, start_server

ADMIN = "gpa_websec_admin"
pytestmark = pytest.mark.timeout(90)
INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)(?![^>]*type=\"application/json\")[^>]*>", re.I)
EVENT_HANDLER = re.compile(r"<[^>]+\son[a-z]+\s*=", re.I)


@pytest.fixture
def site(db_url, tmp_path):  # noqa: ANN001, ANN201
    settings = Settings(database_url=db_url, admin_token=ADMIN, run_loops=False,
                        home=tmp_path, auth_cache_s=0, session_ttl_s=7200, session_idle_s=600)
    app = create_app(settings)
    with TestClient(app) as client:
        api = {"Authorization": f"Bearer {ADMIN}"}
        assert client.post("/api/v1/users", headers=api,
                           json={"name": "bob", "team": "default", "role": "member"}).status_code == 201
        bob = client.post("/api/v1/tokens", headers=api, json={"user": "bob", "name": "web"}).json()
        make_node(app.state.db, "node-a")
        job = client.post("/api/v1/jobs", headers=api, json={
            "name": "web-job", "command": ["true"], "resources": {"gpu": 1}}).json()["id"]
        yield {"client": client, "db": app.state.db, "api": api, "bob": bob, "job": job}


def _session_row(db, cookie: str) -> DashboardSessionRow | None:  # noqa: ANN001
    with db.read() as s:
        return s.scalar(select(DashboardSessionRow).where(
            DashboardSessionRow.session_hash == hashlib.sha256(cookie.encode()).hexdigest()))


def _shift_session(db, cookie: str, **seconds_ago: float) -> None:  # noqa: ANN001
    row = _session_row(db, cookie)
    values = {field: time.time() - ago for field, ago in seconds_ago.items()}
    with db.tx() as s:
        s.execute(update(DashboardSessionRow).where(DashboardSessionRow.id == row.id).values(**values))


def _signed_in(c: TestClient) -> bool:
    return c.get("/jobs", follow_redirects=False).status_code == 200


def test_session_is_a_server_side_id_not_the_token(site) -> None:  # noqa: ANN001
    c, db = site["client"], site["db"]
    r = sign_in(c, ADMIN)
    assert r.status_code == 303
    cookie = c.cookies.get("gpupool_session")
    assert cookie and cookie != ADMIN and ADMIN not in r.headers["set-cookie"]
    flags = r.headers["set-cookie"].lower()
    assert "httponly" in flags and "samesite=strict" in flags and "secure" not in flags  # plain http
    assert "max-age=7200" in flags  # GPUPOOL_SESSION_TTL_S
    row = _session_row(db, cookie)  # only the sha256 of the id is stored
    assert row is not None and not row.revoked and row.expires_at - row.created_at == pytest.approx(7200)
    with db.read() as s:
        assert s.scalar(select(DashboardSessionRow.id).where(DashboardSessionRow.session_hash == cookie)) is None
    assert _signed_in(c)
    # the session id is no API token, and the API token is no session
    assert c.get("/api/v1/whoami", headers={"Authorization": f"Bearer {cookie}"}).status_code == 401
    c.cookies.clear()
    c.cookies.set("gpupool_session", ADMIN)
    assert not _signed_in(c)


def test_sign_out_revokes_the_session_on_the_server(site) -> None:  # noqa: ANN001
    c, db = site["client"], site["db"]
    sign_in(c, ADMIN)
    cookie = c.cookies.get("gpupool_session")
    refused = c.post("/logout", data={"csrf_token": "wrong"})
    assert refused.status_code == 403 and _signed_in(c)  # sign-out is a form like the others
    r = post_form(c, "/", "/logout", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login"
    assert _session_row(db, cookie).revoked
    c.cookies.clear()
    c.cookies.set("gpupool_session", cookie)  # a copy of the old cookie is worth nothing now
    assert not _signed_in(c)


def test_sessions_expire_and_idle_out(site) -> None:  # noqa: ANN001
    c, db = site["client"], site["db"]
    sign_in(c, ADMIN)
    cookie = c.cookies.get("gpupool_session")
    _shift_session(db, cookie, last_seen_at=120)  # active 2 minutes ago: a request renews it
    assert _signed_in(c) and time.time() - _session_row(db, cookie).last_seen_at < 60
    _shift_session(db, cookie, last_seen_at=601)  # idle longer than GPUPOOL_SESSION_IDLE_S
    r = c.get("/jobs", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/login?next=")
    htmx = c.get("/", headers={"HX-Request": "true"}, follow_redirects=False)
    assert htmx.headers.get("hx-redirect", "").startswith("/login")  # a live page leaves, whole
    sign_in(c, ADMIN)
    cookie = c.cookies.get("gpupool_session")
    _shift_session(db, cookie, expires_at=1)  # past its absolute lifetime
    assert not _signed_in(c)


def test_revoked_token_or_disabled_user_ends_their_sessions(site) -> None:  # noqa: ANN001
    c, db, api, bob = site["client"], site["db"], site["api"], site["bob"]
    sign_in(c, bob["token"])
    assert _signed_in(c)
    assert c.delete(f"/api/v1/tokens/{bob['id']}", headers=api).status_code == 200
    assert not _signed_in(c)
    c.cookies.clear()
    sign_in(c, ADMIN)
    assert _signed_in(c)
    with db.tx() as s:
        s.execute(update(UserRow).where(UserRow.name == "admin").values(disabled=True))
    assert not _signed_in(c)
    assert c.get("/api/v1/whoami", headers=api).status_code == 401  # and its API tokens


def test_csrf_token_required_on_every_write(site) -> None:  # noqa: ANN001
    c, job = site["client"], site["job"]
    sign_in(c, ADMIN)
    page = c.get(f"/jobs/{job}")
    token = csrf_from(page.text)
    assert token != c.cookies.get("gpupool_session")
    assert f'hx-headers=\'{{"X-CSRF-Token": "{token}"}}\'' in page.text  # htmx sends it as a header
    writes = [(f"/jobs/{job}/cancel", {}), ("/nodes/node-a/cordon", {}),
              ("/queues/default/default", {"guarantee": "1"})]
    for action, data in writes:
        for bad in ({}, {"csrf_token": "x" * 64}):
            r = c.post(action, data={**data, **bad}, follow_redirects=False)
            assert r.status_code == 403, (action, bad, r.status_code)
            assert "Form expired" in r.text and "text/html" in r.headers["content-type"]
    assert c.get("/api/v1/nodes/node-a", headers=site["api"]).json()["cordoned"] is False
    # a token of another session (another browser, same user) is refused too
    other = TestClient(c.app)
    sign_in(other, ADMIN)
    stolen = csrf_from(other.get("/").text)
    assert c.post("/nodes/node-a/cordon", data={"csrf_token": stolen}).status_code == 403
    # the page's own token works, as a form field or as htmx's header
    assert c.post("/nodes/node-a/cordon", data={"csrf_token": token}, follow_redirects=False).status_code == 303
    r = c.post("/nodes/node-a/uncordon", headers={"X-CSRF-Token": token, "HX-Request": "true"},
               follow_redirects=False)
    assert r.status_code == 303
    assert c.get("/api/v1/nodes/node-a", headers=site["api"]).json()["cordoned"] is False


def test_sign_in_form_has_its_own_csrf_token(site) -> None:  # noqa: ANN001
    c = site["client"]
    c.get("/login")  # the browser holds the form's cookie, but the post comes from elsewhere
    r = c.post("/login", data={"token": ADMIN, "csrf_token": "forged"}, follow_redirects=False)
    assert r.status_code == 403 and "expired" in r.text and "gpupool_session" not in r.cookies
    fresh = TestClient(c.app)  # no form cookie at all
    assert fresh.post("/login", data={"token": ADMIN, "csrf_token": "x"}).status_code == 403
    assert sign_in(c, ADMIN).status_code == 303


def test_pages_run_no_inline_script_under_a_csp(site) -> None:  # noqa: ANN001
    c, job = site["client"], site["job"]
    sign_in(c, ADMIN)
    pages = ["/", "/nodes", "/nodes/node-a", "/jobs", f"/jobs/{job}", "/queues", "/events", "/admin", "/reports/usage",
             "/queues/default/default/edit", "/login", "/nodes/nope"]
    for path in pages:
        r = c.get(path)
        csp = r.headers.get("content-security-policy", "")
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp.split("script-src")[1].split(";")[0]
        assert r.headers["x-content-type-options"] == "nosniff" and r.headers["x-frame-options"] == "DENY"
        assert not INLINE_SCRIPT.search(r.text), (path, INLINE_SCRIPT.search(r.text))
        assert not EVENT_HANDLER.search(r.text), (path, EVENT_HANDLER.search(r.text))
        assert "javascript:" not in r.text.lower(), path
    assert 'data-confirm="Drain node-a?' in c.get("/nodes/node-a").text


def test_https_session_cookie_is_secure(site) -> None:  # noqa: ANN001
    c = TestClient(site["client"].app, base_url="https://testserver")
    r = sign_in(c, ADMIN)
    assert r.status_code == 303 and "secure" in r.headers["set-cookie"].lower()
    assert _signed_in(c)


def test_api_tokens_expire(site) -> None:  # noqa: ANN001
    c, db, api = site["client"], site["db"], site["api"]
    r = c.post("/api/v1/tokens", headers=api, json={"user": "bob", "name": "short", "expires_in_s": 3600})
    assert r.status_code == 201 and r.json()["expires_at"]
    tok = r.json()
    bob = {"Authorization": f"Bearer {tok['token']}"}
    assert c.get("/api/v1/whoami", headers=bob).json()["user"] == "bob"
    listed = {t["id"]: t for t in c.get("/api/v1/tokens", headers=api).json()["items"]}
    assert listed[tok["id"]]["expires_at"] == tok["expires_at"]
    sign_in(c, tok["token"])
    assert _signed_in(c)
    with db.tx() as s:
        s.execute(update(TokenRow).where(TokenRow.id == int(tok["id"])).values(expires_at=time.time() - 1))
    r = c.get("/api/v1/whoami", headers=bob)
    assert r.status_code == 401 and r.json()["detail"] == "token expired"
    assert not _signed_in(c)  # the session opened with it ends too
    refused = sign_in(c, tok["token"])
    assert refused.status_code == 401 and "expired" in refused.text
    for bad in (0, -5, "soon", True, 10**12):
        r = c.post("/api/v1/tokens", headers=api, json={"user": "bob", "expires_in_s": bad})
        assert r.status_code == 422 and "expires_in_s" in r.text, (bad, r.text)
    forever = c.post("/api/v1/tokens", headers=api, json={"user": "bob"}).json()
    assert forever["expires_at"] is None


def test_cli_token_expiry_and_forwarded_https(tmp_path) -> None:  # noqa: ANN001
    with database("sqlite", tmp_path) as url, start_server(url, home=tmp_path / "home") as srv:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GPUPOOL_")}
        env.update(GPUPOOL_SERVER=srv.url, GPUPOOL_TOKEN=srv.admin_token,
                   GPUPOOL_CONFIG=str(tmp_path / "none.yaml"), COLUMNS="200")

        def cli(*args: str) -> subprocess.CompletedProcess:
            return subprocess.run([sys.executable, "-m", "controlplane.cli.main", *args], cwd=REPO,
                                  env=env, capture_output=True, text=True, timeout=60)

        made = cli("token", "create", "--user", "admin", "--expires-in", "2h")
        assert made.returncode == 0 and "expires 20" in made.stdout, made.stdout + made.stderr
        token = made.stdout.strip().splitlines()[-1]
        with srv.client() as api:
            items = {t["name"]: t for t in api.get("/api/v1/tokens").json()["items"]}
            assert items["cli"]["expires_at"]
            assert api.get("/api/v1/whoami", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        bad = cli("token", "create", "--expires-in", "soon")
        assert bad.returncode == 1 and "--expires-in" in bad.stderr and "Traceback" not in bad.stderr
        # behind a TLS-terminating proxy on loopback (trusted by default), cookies are Secure
        # (the client speaks plain HTTP, so it must hand the Secure form cookie back itself)
        with httpx.Client(base_url=srv.url, headers={"X-Forwarded-Proto": "https"}) as browser:
            form = browser.get("/login")
            assert "secure" in form.headers["set-cookie"].lower()
            signin = re.search(r"gpupool_signin=([^;]+)", form.headers["set-cookie"]).group(1)
            r = browser.post("/login", data={"token": srv.admin_token, "csrf_token": csrf_from(form.text)},
                             headers={"Cookie": f"gpupool_signin={signin}"})
            assert r.status_code == 303 and "secure" in r.headers["set-cookie"].lower()
