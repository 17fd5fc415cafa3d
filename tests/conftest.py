"""Shared fixtures: ``db_url`` runs a test on SQLite and on PostgreSQL (a fresh database each)."""

from __future__ import annotations

import pytest

from tests.support.db import database


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path) -> str:  # noqa: ANN001
    with database(request.param, tmp_path) as url:
        yield url
