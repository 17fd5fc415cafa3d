"""Schema migrations (Alembic, `migrations/` at the repo root): upgrade to head, check currency."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Engine

from controlplane.db.base import make_engine

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"
_PG_LOCK_KEY = 7_312_001  # advisory lock so replicas starting together migrate one at a time
RENAMED_REVISIONS = {"f001": "0001a"}  # shipped revision ids that were renamed: old -> new


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def head_revision() -> str:
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def upgrade(url: str, engine: Engine | None = None) -> str:
    """Bring the database at ``url`` to the newest schema; returns the revision now applied."""
    own = engine is None
    engine = engine or make_engine(url, pool_size=1)
    try:
        cfg = alembic_config(url)
        with engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text("SET statement_timeout = 0"))  # data moves may take a while
                conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _PG_LOCK_KEY})
                conn.commit()
            try:
                _rename_revisions(conn)
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
                conn.commit()
            finally:
                if conn.dialect.name == "postgresql":
                    conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _PG_LOCK_KEY})
                    conn.commit()
        return head_revision()
    finally:
        if own:
            engine.dispose()


def _rename_revisions(conn) -> None:  # noqa: ANN001
    """A database stamped with a revision id that was later renamed gets the new id."""
    if not inspect(conn).has_table("alembic_version"):
        return
    for old, new in RENAMED_REVISIONS.items():
        conn.execute(text("UPDATE alembic_version SET version_num = :new WHERE version_num = :old"),
                     {"new": new, "old": old})
    conn.commit()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def is_current(engine: Engine) -> bool:
    """True when the database is reachable and at the newest schema."""
    return current_revision(engine) == head_revision()
