"""Shared fixtures: ``db_url`` runs a test on SQLite and on PostgreSQL (a fresh database each);
``db`` is that database migrated and opened."""

from __future__ import annotations

import pytest

from controlplane.db import migrate
from controlplane.db.database import Database
from tests.support.db import database


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path) -> str:  # noqa: ANN001
    with database(request.param, tmp_path) as url:
        yield url


@pytest.fixture
def db(db_url: str):  # noqa: ANN201
    migrate.upgrade(db_url)
    database_ = Database(db_url)
    yield database_
    database_.dispose()
