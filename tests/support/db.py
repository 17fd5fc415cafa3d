"""Throwaway databases for tests: a SQLite file, or a uniquely named PostgreSQL database.

PostgreSQL is at 127.0.0.1:5432 (user postgres, trust auth) unless GPUPOOL_TEST_PG_DSN says
otherwise. When it is unreachable, tests skip, unless GPUPOOL_REQUIRE_POSTGRES=1 (then they fail).
"""

from __future__ import annotations

import os
import uuid
from contextlib import contextmanager
from collections.abc import Iterator
from pathlib import Path

PG_DSN = os.environ.get("GPUPOOL_TEST_PG_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=postgres")


def _pg_admin():  # noqa: ANN202
    import psycopg

    return psycopg.connect(PG_DSN, autocommit=True, connect_timeout=3)


def postgres_available() -> str | None:
    """None when PostgreSQL answers, else why not."""
    try:
        with _pg_admin() as conn:
            conn.execute("SELECT 1")
        return None
    except Exception as err:  # noqa: BLE001
        return f"PostgreSQL unreachable ({str(err).splitlines()[0]})"


def _pg_url(name: str) -> str:
    parts = dict(p.split("=", 1) for p in PG_DSN.split())
    host, port, user = parts.get("host", "127.0.0.1"), parts.get("port", "5432"), parts.get("user", "postgres")
    password = parts.get("password")
    auth = f"{user}:{password}" if password else user
    return f"postgresql+psycopg://{auth}@{host}:{port}/{name}"


@contextmanager
def postgres_database(prefix: str = "gpupool_test") -> Iterator[str]:
    """Create a uniquely named database, yield its SQLAlchemy URL, drop it afterwards."""
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:10]}".lower()
    with _pg_admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _pg_url(name)
    finally:
        with _pg_admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def sqlite_database(directory: Path) -> Iterator[str]:
    path = Path(directory) / f"gpupool-{uuid.uuid4().hex[:8]}.db"
    yield f"sqlite:///{path}"


@contextmanager
def database(kind: str, directory: Path) -> Iterator[str]:
    """``kind`` is "sqlite" or "postgresql"; skips (or fails, when required) without PostgreSQL."""
    if kind == "sqlite":
        with sqlite_database(directory) as url:
            yield url
        return
    why = postgres_available()
    if why:
        import pytest

        if os.environ.get("GPUPOOL_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"{why} and GPUPOOL_REQUIRE_POSTGRES=1")
        pytest.skip(why)
    with postgres_database() as url:
        yield url
