"""Leader lease in the database: one row per loop name, taken when expired, renewed by its holder."""

from __future__ import annotations

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from controlplane.db.base import now
from controlplane.db.database import Database
from controlplane.db.models import LeaseRow


def try_acquire(db: Database, name: str, holder: str, ttl_s: float) -> bool:
    """True when ``holder`` holds (or just took, or renewed) the lease for ``ttl_s`` more seconds.

    One conditional UPDATE: safe with replicas side by side (row lock on PostgreSQL,
    a single writer on SQLite).
    """
    ts = now()
    with db.tx() as s:
        res = s.execute(update(LeaseRow).where(
            LeaseRow.name == name, (LeaseRow.holder == holder) | (LeaseRow.expires_at < ts))
            .values(holder=holder, expires_at=ts + ttl_s))
        if res.rowcount == 1:
            return True
        if s.scalar(select(LeaseRow.name).where(LeaseRow.name == name)) is not None:
            return False
    try:
        with db.tx() as s:
            s.execute(insert(LeaseRow).values(name=name, holder=holder, expires_at=ts + ttl_s))
        return True
    except IntegrityError:
        return False


def release(db: Database, name: str, holder: str) -> None:
    with db.tx() as s:
        s.execute(update(LeaseRow).where(LeaseRow.name == name, LeaseRow.holder == holder)
                  .values(expires_at=0.0))
