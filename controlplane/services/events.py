"""Audit log: every state change and admin action is one event row, listed newest first."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from controlplane.core.bounds import canonical_id
from controlplane.db.base import now
from controlplane.db.database import Database
from controlplane.db.models import EventRow, JobRow, NodeRow
from controlplane.services.auth import Principal
from controlplane.services.errors import Invalid
from controlplane.services.serialize import iso


def record(s: Session, kind: str, object_type: str, object_id: object, actor: str, *,
           reason: str | None = None, data: dict | None = None, job_id: int | None = None,
           node_id: int | None = None, team_id: int | None = None) -> None:
    s.add(EventRow(ts=now(), kind=kind, object_type=object_type, object_id=str(object_id),
                   actor=actor, reason=reason, data=data, job_id=job_id, node_id=node_id,
                   team_id=team_id))


def event_dict(e: EventRow) -> dict:
    return {"id": str(e.id), "ts": iso(e.ts), "kind": e.kind, "object_type": e.object_type,
            "object_id": e.object_id, "actor": e.actor, "reason": e.reason, "data": e.data or {}}


def parse_cursor(cursor: str | None) -> int | None:
    if cursor in (None, ""):
        return None
    value = canonical_id(cursor)
    if value is None:
        raise Invalid("cursor", "not a cursor this server returned")
    return value


def list_events(db: Database, who: Principal, *, job: str | None = None, node: str | None = None,
                limit: int = 100, cursor: str | None = None) -> dict:
    before = parse_cursor(cursor)
    q = select(EventRow).order_by(EventRow.id.desc()).limit(limit + 1)
    if before is not None:
        q = q.where(EventRow.id < before)
    with db.read() as s:
        if job is not None:
            from controlplane.services.jobs import visible_job  # late: jobs imports this module

            q = q.where(EventRow.job_id == visible_job(s, who, job).id)
        if node is not None:
            node_id = s.scalar(select(NodeRow.id).where(NodeRow.name == node))
            if node_id is None:
                from controlplane.services.errors import NotFound

                raise NotFound(f"no node named {node!r}")
            q = q.where(EventRow.node_id == node_id)
        if not who.is_admin:
            q = q.where(EventRow.team_id == who.team_id)
        rows = list(s.scalars(q))
    more = len(rows) > limit
    rows = rows[:limit]
    return {"items": [event_dict(e) for e in rows],
            "next_cursor": str(rows[-1].id) if more and rows else None}


def job_events(s: Session, job: JobRow) -> list[dict]:
    rows = s.scalars(select(EventRow).where(EventRow.job_id == job.id).order_by(EventRow.id))
    return [event_dict(e) for e in rows]
