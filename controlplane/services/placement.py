"""Where attempts ran: their members' nodes and slices, read from member and slice rows (the one
place a placement is stored; released slices stay as history)."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from controlplane.db.models import AttemptRow, MemberRow, NodeRow, SliceRow


def members_by_attempt(s: Session, attempt_ids: list[int], *, live_only: bool = False) -> dict[int, list[dict]]:
    """Each attempt's members as placement dicts (rank order), with their slices."""
    if not attempt_ids:
        return {}
    q = (select(MemberRow.id, MemberRow.attempt_id, MemberRow.rank, NodeRow.name, MemberRow.cpu_milli,
                MemberRow.memory_mib).join(NodeRow, NodeRow.id == MemberRow.node_id)
         .where(MemberRow.attempt_id.in_(attempt_ids)).order_by(MemberRow.attempt_id, MemberRow.rank))
    members = {}
    out: dict[int, list[dict]] = {}
    for member_id, attempt_id, rank, node, cpu, mem in s.execute(q):
        m = {"rank": rank, "node": node, "cpu_milli": cpu, "memory_mib": mem, "slices": []}
        members[member_id] = m
        out.setdefault(attempt_id, []).append(m)
    sq = (select(SliceRow.member_id, SliceRow.accelerator_uuid, SliceRow.compute_milli, SliceRow.memory_mib)
          .where(SliceRow.member_id.in_(list(members))).order_by(SliceRow.id))
    if live_only:
        sq = sq.where(SliceRow.released_at.is_(None))
    for member_id, uuid, milli, mem in s.execute(sq):
        members[member_id]["slices"].append({"accelerator_uuid": uuid, "compute_milli": milli,
                                             "memory_mib": mem})
    return out


def placements_of(s: Session, job_ids: list[int]) -> dict[int, list[dict]]:
    """The latest attempt's placement of each job (jobs never placed are absent)."""
    if not job_ids:
        return {}
    latest = dict(s.execute(select(AttemptRow.job_id, func.max(AttemptRow.id))
                            .where(AttemptRow.job_id.in_(job_ids)).group_by(AttemptRow.job_id)).all())
    by_attempt = members_by_attempt(s, list(latest.values()))
    return {job_id: by_attempt.get(attempt_id, []) for job_id, attempt_id in latest.items()}
