"""Read models of the dashboard pages: grouped or paginated queries, plain dicts out.

Overview numbers come from GROUP BY queries (cost independent of the job count); the Nodes
page reads one page of nodes with their accelerators and live slices in three queries.
"""

from __future__ import annotations

import time

from sqlalchemy import func, select

from controlplane.db.models import (AcceleratorRow, JobRow, MemberRow, NodeRow, QueueRow, SampleRow,
                                    SliceRow, TeamRow)
from controlplane.metrics_queries import capacity_by_model, pending_by_reason, queue_usage

NODES_PER_PAGE = 25


def fragmentation(models: list[dict]) -> list[dict]:
    """Per model: whole-free GPUs, partly used GPUs, and free milli stranded on partly used ones."""
    return [{"vendor": m["vendor"], "model": m["model"], "free_whole": m["free_whole"],
             "partial": m["partial"], "stranded_milli": m["stranded_milli"], "ratio": m["frag_ratio"]}
            for m in models]


def overview(db, team_id: int | None = None) -> dict:  # noqa: ANN001
    """Everything the Overview page shows (members see only their team's queues)."""
    now = time.time()
    with db.read() as s:
        models = capacity_by_model(s)
        queues = queue_usage(s, now)
        pending = pending_by_reason(queues)
        frag = fragmentation(models)
        states = dict(s.execute(select(NodeRow.state, func.count()).group_by(NodeRow.state)).all())
        team = s.scalar(select(TeamRow.name).where(TeamRow.id == team_id)) if team_id else None
    if team is not None:
        queues = [q for q in queues if q["team"] == team]
        pending = {k: v for k, v in pending.items() if k[0] == team}
    reasons: dict[str, int] = {}
    for (_, _, code), n in pending.items():
        reasons[code] = reasons.get(code, 0) + n
    totals = {k: sum(m[k] for m in models) for k in
              ("count", "milli", "allocated_milli", "memory_mib", "allocated_memory_mib", "unhealthy")}
    totals["used_milli"] = sum(int(m["util"] * m["milli"]) for m in models)
    return {"models": models, "queues": queues, "pending": sorted(pending.items()),
            "reasons": sorted(reasons.items(), key=lambda kv: -kv[1]), "frag": frag,
            "totals": totals, "node_states": states, "nodes": sum(states.values())}


def nodes_page(db, *, page: int = 1, search: str = "", state: str = "") -> dict:  # noqa: ANN001
    """One page of nodes with accelerators and their live slices (job id, name, queue)."""
    q = select(NodeRow)
    if search:
        q = q.where(NodeRow.name.contains(search, autoescape=True))
    if state == "cordoned":
        q = q.where(NodeRow.cordoned.is_(True))
    elif state:
        q = q.where(NodeRow.state == state)
    with db.read() as s:
        total = s.scalar(select(func.count()).select_from(q.subquery())) or 0
        pages = max(1, -(-total // NODES_PER_PAGE))
        page = min(max(1, page), pages)
        rows = list(s.scalars(q.order_by(NodeRow.name).offset((page - 1) * NODES_PER_PAGE)
                              .limit(NODES_PER_PAGE)))
        nodes = _with_accelerators(s, rows)
    return {"nodes": nodes, "page": page, "pages": pages, "total": total}


def node_detail(db, name: str) -> dict | None:  # noqa: ANN001
    with db.read() as s:
        row = s.scalar(select(NodeRow).where(NodeRow.name == name))
        return _with_accelerators(s, [row])[0] if row is not None else None


def _with_accelerators(s, rows: list) -> list[dict]:  # noqa: ANN001
    ids = [n.id for n in rows]
    accs: dict[int, list[dict]] = {i: [] for i in ids}
    by_uuid: dict[str, dict] = {}
    if ids:
        for a, sample in s.execute(
                select(AcceleratorRow, SampleRow)
                .outerjoin(SampleRow, SampleRow.uuid == AcceleratorRow.uuid)
                .where(AcceleratorRow.node_id.in_(ids))
                .order_by(AcceleratorRow.node_id, AcceleratorRow.index)):
            tel = (sample.telemetry if sample is not None else None) or {}
            d = {"uuid": a.uuid, "index": a.index, "vendor": a.vendor, "model": a.model,
                 "memory_mib": a.memory_mib, "healthy": a.healthy and (sample is None or sample.healthy),
                 "allocated_milli": a.allocated_milli, "allocated_memory_mib": a.allocated_memory_mib,
                 "unmanaged_memory_mib": sample.unmanaged_memory_mib if sample is not None else 0,
                 "util": sample.gpu_util_pct if sample is not None else None,
                 "memory_used_mib": tel.get("memory_used_mib"), "temperature_c": tel.get("temperature_c"),
                 "power_w": tel.get("power_w"), "xid": tel.get("last_xid"),
                 "unhealthy_reason": a.unhealthy_reason,
                 "ecc": tel.get("ecc_errors"), "slices": []}
            accs[a.node_id].append(d)
            by_uuid[a.uuid] = d
        q = (select(SliceRow.accelerator_uuid, SliceRow.compute_milli, SliceRow.memory_mib,
                    JobRow.id, JobRow.name, QueueRow.name, TeamRow.name)
             .join(MemberRow, MemberRow.id == SliceRow.member_id)
             .join(JobRow, JobRow.id == MemberRow.job_id)
             .join(QueueRow, QueueRow.id == JobRow.queue_id)
             .join(TeamRow, TeamRow.id == QueueRow.team_id)
             .where(SliceRow.accelerator_uuid.in_(list(by_uuid)), SliceRow.released_at.is_(None)))
        for uuid, milli, mem, job_id, job_name, queue, team in s.execute(q):
            if uuid in by_uuid:
                by_uuid[uuid]["slices"].append({"milli": milli, "memory_mib": mem, "job_id": str(job_id),
                                                "job": job_name, "queue": f"{team}/{queue}",
                                                "team": team})
    return [{"name": n.name, "address": n.address, "state": n.state, "cordoned": n.cordoned,
             "health_cordoned": bool(n.health_cordoned),
             "cpu_milli": n.cpu_milli, "memory_mib": n.memory_mib, "labels": n.labels or {},
             "backend": n.backend, "agent_version": n.agent_version,
             "last_heartbeat_at": n.last_heartbeat_at, "accelerators": accs[n.id]} for n in rows]


def queue_names(db, team_id: int | None) -> list[str]:  # noqa: ANN001
    with db.read() as s:
        q = select(QueueRow.name).distinct().order_by(QueueRow.name)
        if team_id:
            q = q.where(QueueRow.team_id == team_id)
        return list(s.scalars(q))


def team_names(db) -> list[str]:  # noqa: ANN001
    with db.read() as s:
        return list(s.scalars(select(TeamRow.name).order_by(TeamRow.name)))


def job_counts(db, team_id: int | None) -> dict[str, int]:  # noqa: ANN001
    with db.read() as s:
        q = select(JobRow.status, func.count()).group_by(JobRow.status)
        if team_id:
            q = q.where(JobRow.team_id == team_id)
        return {st: int(n) for st, n in s.execute(q)}


__all__ = ["overview", "nodes_page", "node_detail", "fragmentation", "queue_names", "team_names",
           "job_counts", "accelerator_telemetry"]


def accelerator_telemetry(db, uuids: list[str]) -> dict[str, dict]:  # noqa: ANN001
    """Latest sample of each accelerator in ``uuids`` (for a job's GPU metrics)."""
    if not uuids:
        return {}
    with db.read() as s:
        rows = s.execute(select(AcceleratorRow.uuid, AcceleratorRow.index, AcceleratorRow.model,
                                AcceleratorRow.memory_mib, SampleRow.telemetry)
                         .outerjoin(SampleRow, SampleRow.uuid == AcceleratorRow.uuid)
                         .where(AcceleratorRow.uuid.in_(uuids)))
        return {u: {"index": i, "model": m, "memory_mib": mem, **(tel or {})} for u, i, m, mem, tel in rows}
