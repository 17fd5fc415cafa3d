"""Signing in to the dashboard and posting its forms the way a browser does (with CSRF tokens).

Works with any httpx-style client that keeps cookies (FastAPI's TestClient, httpx.Client).
"""

from __future__ import annotations

import re

CSRF_INPUT = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_from(html: str) -> str:
    """The CSRF token of a rendered page's first form."""
    match = CSRF_INPUT.search(html)
    assert match, "no csrf_token field on this page"
    return match.group(1)


def sign_in(client, token: str, next_path: str = "/"):  # noqa: ANN001, ANN201
    """Open the sign-in form, post ``token``; returns the (unfollowed) answer."""
    form = client.get("/login")
    return client.post("/login", data={"token": token, "next": next_path, "csrf_token": csrf_from(form.text)},
                       follow_redirects=False)


def post_form(client, page: str, action: str, data: dict | None = None, **kw):  # noqa: ANN001, ANN003, ANN201
    """POST ``data`` to ``action`` with the CSRF token of ``page`` (as the page's form would)."""
    token = csrf_from(client.get(page).text)
    return client.post(action, data={**(data or {}), "csrf_token": token}, **kw)
