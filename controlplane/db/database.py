"""One handle on the database: engine, session factory and a small in-process cache."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from collections.abc import Iterator

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from controlplane.db.base import make_engine, make_session_factory


class Database:
    """Engine + sessions; ``tx()`` is one transaction (commit on success, rollback on error)."""

    def __init__(self, url: str, *, pool_size: int = 10, engine: Engine | None = None):
        self.url = url
        self.engine = engine or make_engine(url, pool_size=pool_size)
        self.sessions: sessionmaker = make_session_factory(self.engine)
        # SQLite: reads on their own deferred-transaction engine (never the write lock)
        self.read_engine = (make_engine(url, pool_size=pool_size, readonly=True)
                            if self.engine.dialect.name == "sqlite" else self.engine)
        self.read_sessions: sessionmaker = make_session_factory(self.read_engine)
        self.cache: dict = {}
        self.cache_lock = threading.Lock()

    @property
    def is_postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    @contextmanager
    def tx(self) -> Iterator[Session]:
        with self.sessions.begin() as session:
            yield session

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A read-only session (closing keeps loaded attributes readable)."""
        with self.read_sessions() as session:
            yield session

    def dispose(self) -> None:
        self.engine.dispose()
        self.read_engine.dispose()


RETRYABLE_SQLSTATES = {"40P01", "40001"}  # deadlock detected, serialization failure


def is_retryable(err: BaseException) -> bool:
    from sqlalchemy.exc import OperationalError

    if not isinstance(err, OperationalError):
        return False
    return getattr(getattr(err, "orig", None), "sqlstate", None) in RETRYABLE_SQLSTATES


def retry_deadlocks(fn):  # noqa: ANN001, ANN201
    """Re-run a unit of work that owns its transaction when PostgreSQL aborts it for a deadlock."""
    import functools
    import random
    import time

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        for attempt in range(6):
            try:
                return fn(*args, **kwargs)
            except Exception as err:
                if attempt == 5 or not is_retryable(err):
                    raise
                time.sleep(random.uniform(0.005, 0.05) * (attempt + 1))
        return None

    return wrapper
