"""Module-scoped server fixtures (one real server process per database kind per test module)."""

from __future__ import annotations

import pytest

from tests.support.db import database
from tests.support.server import start_server


def server_fixture(env: dict[str, str] | None = None):  # noqa: ANN201
    """A pytest fixture yielding a running server, once on SQLite and once on PostgreSQL."""

    @pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
    def _server(request, tmp_path_factory):  # noqa: ANN001, ANN202
        tmp = tmp_path_factory.mktemp(f"srv-{request.param}")
        with database(request.param, tmp) as url:
            srv = start_server(url, env=env, home=tmp / "home")
            try:
                yield srv
            finally:
                srv.stop()

    return _server
