"""Migrations bring an empty database to a schema identical to the models; /readyz tells."""

from __future__ import annotations

import asyncio

import httpx
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from controlplane.api.app import build_app
from controlplane.db import migrate
from controlplane.db.base import Base
from controlplane.db.database import Database
from controlplane.settings import Settings


def _ready(db: Database) -> httpx.Response:
    app = build_app(db, Settings(run_loops=False))

    async def call() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            return await c.get("/readyz")

    return asyncio.run(call())


def test_upgrade_is_complete_and_idempotent(db_url) -> None:  # noqa: ANN001
    db = Database(db_url)
    try:
        assert migrate.current_revision(db.engine) is None
        r = _ready(db)
        assert r.status_code == 503 and "migration" in r.json()["detail"]
        assert migrate.upgrade(db_url) == migrate.head_revision()
        assert migrate.upgrade(db_url) == migrate.head_revision()  # again: a no-op
        assert migrate.is_current(db.engine)
        with db.engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        assert diff == [], diff
        assert _ready(db).json() == {"status": "ready"}
    finally:
        db.dispose()


def test_readyz_reports_an_unreachable_database(tmp_path) -> None:  # noqa: ANN001
    db = Database("postgresql+psycopg://postgres@127.0.0.1:1/nothing")
    r = _ready(db)
    assert r.status_code == 503 and r.json()["detail"].startswith("database unreachable")
    assert r.headers["content-type"].startswith("application/problem+json")
