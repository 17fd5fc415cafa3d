"""Agent protocol use cases: assignments (start/stop orders), status reports, log chunks."""

from __future__ import annotations

import json
import logging

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from controlplane.core import wire
from controlplane.core.states import MemberState
from controlplane.core.wire import StatusKind
from controlplane.db.database import Database, retry_deadlocks
from controlplane.db.models import (AcceleratorRow, AttemptRow, JobRow, MemberRow,
                                    NodeRow, QueueRow, SliceRow, StatusSeenRow, TeamRow, UserRow)
from controlplane.services import events, lifecycle, logs
from controlplane.services.logs import LogCap
from controlplane.services.launch import build_start
from controlplane.services.nodes import check_node
from controlplane.services.principal import Principal

log = logging.getLogger("gpupool.agent")


def node_epoch(db: Database, node_id: int) -> int:
    with db.read() as s:
        return s.scalar(select(NodeRow.epoch).where(NodeRow.id == node_id)) or 0


@retry_deadlocks
def assignments(db: Database, who: Principal) -> wire.Assignments:
    """What this node should run now; start orders are marked delivered when handed out."""
    node_id = who.node_id
    with db.tx() as s:
        epoch = s.scalar(select(NodeRow.epoch).where(NodeRow.id == node_id))
        rows = s.execute(
            select(MemberRow, AttemptRow, JobRow)
            .join(AttemptRow, AttemptRow.id == MemberRow.attempt_id)
            .join(JobRow, JobRow.id == MemberRow.job_id)
            .where(MemberRow.node_id == node_id, MemberRow.state.in_(lifecycle.LIVE))).all()
        out = wire.Assignments(epoch=epoch)
        to_deliver = []
        for member, attempt, job in rows:
            if attempt.stop_kind:
                out.stop.append(wire.StopOrder(job_id=str(job.id), attempt_id=str(attempt.id),
                                               rank=member.rank, epoch=epoch, reason=attempt.stop_reason or attempt.stop_kind,
                                               grace_s=float(job.spec.get("grace_s", 10.0))))
                continue
            out.desired_attempts.append(str(attempt.id))
            if member.state == MemberState.ASSIGNED.value:
                to_deliver.append((member, attempt, job))
        if to_deliver:
            ids = [m.id for m, _, _ in to_deliver]
            s.execute(update(MemberRow).where(MemberRow.id.in_(ids),
                                              MemberRow.state == MemberState.ASSIGNED.value)
                      .values(delivered=True))
            slices = _slices_for(s, ids)
            masters = dict(s.execute(select(NodeRow.id, NodeRow.address)
                                     .where(NodeRow.id.in_({a.master_node_id for _, a, _ in to_deliver}))).all())
            identities = _identities(s, [j for _, _, j in to_deliver])
            for member, attempt, job in to_deliver:
                try:
                    out.start.append(build_start(job, attempt, member, slices.get(member.id, []), epoch,
                                                 masters.get(attempt.master_node_id, attempt.master_addr),
                                                 identities[job.id]))
                except Exception:  # noqa: BLE001 - one unreadable job must not block the node
                    log.exception("cannot build the start order of job %s", job.id)
        out.desired_attempts = sorted(set(out.desired_attempts))
        return out


def _identities(s, jobs: list[JobRow]) -> dict[int, wire.JobIdentity]:  # noqa: ANN001
    """Team, queue and user names of each job, from the server's own rows."""
    q = (select(JobRow.id, TeamRow.name, QueueRow.name, UserRow.name)
         .join(TeamRow, TeamRow.id == JobRow.team_id).join(QueueRow, QueueRow.id == JobRow.queue_id)
         .join(UserRow, UserRow.id == JobRow.user_id).where(JobRow.id.in_({j.id for j in jobs})))
    return {job_id: wire.JobIdentity(team=team, queue=queue, user=user)
            for job_id, team, queue, user in s.execute(q)}


def _slices_for(s, member_ids: list[int]) -> dict[int, list[wire.SliceSpec]]:  # noqa: ANN001
    out: dict[int, list[wire.SliceSpec]] = {}
    q = (select(SliceRow, AcceleratorRow.memory_mib)
         .join(AcceleratorRow, AcceleratorRow.uuid == SliceRow.accelerator_uuid)
         .where(SliceRow.member_id.in_(member_ids), SliceRow.released_at.is_(None)).order_by(SliceRow.id))
    for sl, device_mem in s.execute(q):
        out.setdefault(sl.member_id, []).append(wire.SliceSpec(
            accelerator_uuid=sl.accelerator_uuid, compute_milli=sl.compute_milli,
            memory_mib=sl.memory_mib, device_memory_mib=device_mem))
    return out


def report_status(db: Database, who: Principal, batch: wire.StatusBatch) -> wire.Ack:
    """Apply each report once per (node, seq), each in its own transaction."""
    node_id = check_node(who, batch.node_id)
    accepted = 0
    for report in sorted(batch.reports, key=lambda r: r.seq):
        try:
            accepted += _one_report(db, who, node_id, report)
        except IntegrityError:
            continue  # replay of a report already applied
    return wire.Ack(accepted=accepted)


@retry_deadlocks
def _one_report(db: Database, who: Principal, node_id: int, report: wire.StatusReport) -> int:
    with db.tx() as s:
        s.add(StatusSeenRow(node_id=node_id, seq=report.seq))
        s.flush()
        return 1 if _apply_report(s, who, node_id, report) else 0


def _ids(report: wire.StatusReport) -> tuple[int, int] | None:
    try:
        return int(report.job_id), int(report.attempt_id)
    except ValueError:
        return None


def _apply_report(s, who: Principal, node_id: int, report: wire.StatusReport) -> bool:  # noqa: ANN001
    ids = _ids(report)
    if ids is None:
        return False
    job_id, attempt_id = ids
    job = s.scalar(select(JobRow).where(JobRow.id == job_id).with_for_update())
    attempt = s.scalar(select(AttemptRow).where(AttemptRow.id == attempt_id,
                                                AttemptRow.job_id == job_id).with_for_update())
    if job is None or attempt is None:
        return False
    member = s.scalar(select(MemberRow).where(MemberRow.attempt_id == attempt_id,
                                              MemberRow.rank == report.rank,
                                              MemberRow.node_id == node_id))
    if member is None or member.state == MemberState.EXITED.value:
        return False
    kind = report.kind
    if kind == StatusKind.STARTED:
        lifecycle.member_started(s, job, attempt, member, pid=report.pid, actor=who.actor,
                                 enforcement=report.enforcement or None)
        return True
    if kind == StatusKind.READY:
        if report.endpoint:
            job.endpoint = report.endpoint[:512]
        events.record(s, "ready", "job", job.id, who.actor, reason=report.reason or "ready",
                      job_id=job.id, team_id=job.team_id, data={"endpoint": report.endpoint})
        return True
    failed = kind == StatusKind.FAILED_TO_START or (
        kind == StatusKind.KILLED and attempt.stop_kind is None) or (report.exit_code not in (0, None))
    if kind == StatusKind.EXITED and report.exit_code is None:
        failed = True
    reason = report.reason or (f"rank {report.rank} {kind.value}" +
                               (f" with code {report.exit_code}" if report.exit_code is not None else ""))
    lifecycle.member_exited(s, job, attempt, member, exit_code=report.exit_code, reason=reason,
                            failed=failed)
    return True


@retry_deadlocks
def ingest_logs(db: Database, who: Principal, batch: wire.LogBatch, cap: LogCap = LogCap()) -> wire.Ack:
    """Store chunks idempotently by (attempt, rank, stream, offset) within the per-stream cap;
    progress lines update the job. Chunks of attempts this node never ran are ignored."""
    node_id = check_node(who, batch.node_id)
    with db.tx() as s:
        allowed = {(str(j), str(a)) for j, a in s.execute(
            select(MemberRow.job_id, MemberRow.attempt_id).where(MemberRow.node_id == node_id)
            .where(MemberRow.attempt_id.in_([int(c.attempt_id) for c in batch.chunks
                                             if c.attempt_id.isascii() and c.attempt_id.isdigit()
                                             and len(c.attempt_id) < 19])))}
        mine = [c for c in batch.chunks if (c.job_id, c.attempt_id) in allowed and c.offset >= 0]
        accepted, stored = logs.store_chunks(s, mine, cap)
        progress: dict[int, dict] = {}
        for c in stored:
            for line in c.data.splitlines():
                if line.startswith(wire.PROGRESS_PREFIX):
                    try:
                        value = json.loads(line[len(wire.PROGRESS_PREFIX):])
                    except ValueError:
                        continue
                    if isinstance(value, dict):
                        progress[int(c.job_id)] = value
        for job_id, value in progress.items():
            s.execute(update(JobRow).where(JobRow.id == job_id).values(progress=logs.clean_json(value)))
    return wire.Ack(accepted=accepted)
