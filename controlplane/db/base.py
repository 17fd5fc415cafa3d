"""Declarative base, engine and session factory for SQLite (WAL, immediate txns) and PostgreSQL."""

from __future__ import annotations

import time

from sqlalchemy import JSON, Float, MetaData, cast, create_engine, event, extract, func
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, sessionmaker

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {dict: JSON, list: JSON}


def now() -> float:
    """Wall-clock seconds; every timestamp in the database is one of these."""
    return time.time()


def db_clock(dialect_name: str) -> ColumnElement[float]:
    """The database's own clock in epoch seconds, as SQL: every replica stamps and compares node
    heartbeats with this one clock, so replicas' clock skew never marks a node lost."""
    if dialect_name == "postgresql":
        return cast(extract("epoch", func.clock_timestamp()), Float)
    return (func.julianday("now") - 2440587.5) * 86400.0


def make_engine(url: str, *, pool_size: int = 10, readonly: bool = False) -> Engine:
    """An engine tuned per dialect: SQLite serialises writers (``readonly``: deferred transactions
    that never take the write lock, so long reads never block writers), PostgreSQL gets a pool."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30},
                               pool_size=pool_size, max_overflow=20)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # noqa: ANN001
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn):  # noqa: ANN001
            conn.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")

        return engine
    # every statement is bounded (a stuck query must not hold a pool slot or locks for ever)
    return create_engine(url, pool_size=pool_size, max_overflow=20, pool_pre_ping=True, pool_timeout=10,
                         connect_args={"connect_timeout": 5,
                                       "options": f"-c statement_timeout={STATEMENT_TIMEOUT_MS}"})


STATEMENT_TIMEOUT_MS = 30_000  # PostgreSQL statement_timeout for the server's connections


def make_session_factory(engine: Engine) -> sessionmaker:
    return sessionmaker(engine, expire_on_commit=False)


def is_postgres(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"
