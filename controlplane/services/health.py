"""Accelerator health: a GPU its agent reports failing (a critical XID, lost) or that vanished from
its node's registration is cordoned: never placed on again, its jobs stopped and requeued, and its
node cordoned once ``cordon_node_after`` of its accelerators are; an admin clears it.

Cordons are sticky: a GPU that reports healthy again stays cordoned until an admin marks it
healthy (XIDs such as 79, "fallen off the bus", usually need a reset or a reboot first).
"""

from __future__ import annotations

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from controlplane.core import wire
from controlplane.core.states import StopKind
from controlplane.db.base import now
from controlplane.db.database import Database, retry_deadlocks
from controlplane.db.models import AcceleratorRow, JobRow, MemberRow, NodeRow, SampleRow, SliceRow
from controlplane.services import events, lifecycle
from controlplane.services.errors import NotFound
from controlplane.services.principal import Principal, require_admin

MISSING = "missing from its node's registration"


def sample_problem(sample: wire.AcceleratorSample) -> str:
    """Why an unhealthy sample is unhealthy, for people: 'XID 79' or what the agent said."""
    if sample.last_xid:
        return f"XID {sample.last_xid}"
    return "reported failing by its agent (lost, or a device error)"


def cordon_accelerators(s: Session, node: NodeRow, problems: dict[str, str], actor: str, *,
                        cordon_node_after: int) -> list[str]:
    """Mark these accelerators of ``node`` unhealthy (uuid -> why), stop and requeue the jobs on
    them, cordon the node at ``cordon_node_after`` unhealthy ones (0: never); returns the uuids
    that were healthy until now. The caller holds the node row's lock."""
    ts = now()
    fresh = list(s.scalars(select(AcceleratorRow).where(
        AcceleratorRow.uuid.in_(list(problems)), AcceleratorRow.node_id == node.id,
        AcceleratorRow.healthy.is_(True)).order_by(AcceleratorRow.index).with_for_update()))
    for acc in fresh:
        acc.healthy, acc.unhealthy_reason, acc.unhealthy_since = False, problems[acc.uuid], ts
        events.record(s, "accelerator_unhealthy", "accelerator", acc.uuid, actor, node_id=node.id,
                      reason=f"accelerator {acc.uuid} (GPU {acc.index} of {node.name}) unhealthy: "
                             f"{problems[acc.uuid]}", data={"index": acc.index, "model": acc.model})
    for acc in fresh:
        _stop_jobs_on(s, acc.uuid, f"accelerator {acc.uuid} unhealthy: {problems[acc.uuid]}", actor)
    if fresh and cordon_node_after > 0 and not node.cordoned:
        sick = _unhealthy_count(s, node.id)
        if sick >= cordon_node_after:
            node.cordoned, node.health_cordoned = True, True
            events.record(s, "node_cordoned", "node", node.name, actor, node_id=node.id,
                          reason=f"{sick} unhealthy accelerators (the node is cordoned at "
                                 f"{cordon_node_after}: GPUPOOL_UNHEALTHY_GPUS_TO_CORDON_NODE)")
    return [a.uuid for a in fresh]


def _unhealthy_count(s: Session, node_id: int) -> int:
    return s.scalar(select(func.count()).select_from(AcceleratorRow).where(
        AcceleratorRow.node_id == node_id, AcceleratorRow.healthy.is_(False))) or 0


def _stop_jobs_on(s: Session, uuid: str, reason: str, actor: str) -> None:
    """Stop (and so requeue, as a preemption does) every job with a live slice on ``uuid``."""
    job_ids = sorted(set(s.scalars(
        select(MemberRow.job_id).join(SliceRow, SliceRow.member_id == MemberRow.id)
        .where(SliceRow.accelerator_uuid == uuid, SliceRow.released_at.is_(None),
               MemberRow.state.in_(lifecycle.LIVE)))))
    for job_id in job_ids:
        job = s.scalar(select(JobRow).where(JobRow.id == job_id).with_for_update())
        lifecycle.request_stop(s, job, StopKind.PREEMPT, reason, actor)


@retry_deadlocks
def check_samples(db: Database, who: Principal, node_id: int, samples: list[wire.AcceleratorSample], *,
                  cordon_node_after: int) -> None:
    """After a heartbeat: cordon the node's accelerators whose newest sample is unhealthy (one
    primary-key read when some sample is unhealthy, nothing otherwise)."""
    problems = {x.uuid: sample_problem(x) for x in samples if not x.healthy}
    if not problems:
        return
    with db.read() as s:
        known_healthy = set(s.scalars(select(AcceleratorRow.uuid).where(
            AcceleratorRow.uuid.in_(list(problems)), AcceleratorRow.node_id == node_id,
            AcceleratorRow.healthy.is_(True))))
    if not known_healthy:  # already cordoned: nothing to do
        return
    with db.tx() as s:
        node = s.scalar(select(NodeRow).where(NodeRow.id == node_id).with_for_update())
        if node is not None:
            cordon_accelerators(s, node, {u: problems[u] for u in known_healthy}, who.actor,
                                cordon_node_after=cordon_node_after)


def _accelerator_node(s: Session, uuid: str) -> tuple[AcceleratorRow, NodeRow]:
    row = s.scalar(select(AcceleratorRow).where(AcceleratorRow.uuid == uuid))
    if row is None:
        raise NotFound(f"no accelerator {uuid!r}; see GET /api/v1/accelerators")
    node = s.scalar(select(NodeRow).where(NodeRow.id == row.node_id).with_for_update())
    return row, node


@retry_deadlocks
def mark_unhealthy(db: Database, who: Principal, uuid: str, reason: str, *, cordon_node_after: int) -> str:
    """An admin cordons an accelerator (e.g. for maintenance); its jobs are stopped and requeued."""
    require_admin(who)
    with db.tx() as s:
        _, node = _accelerator_node(s, uuid)
        cordon_accelerators(s, node, {uuid: f"{reason} ({who.actor})"}, who.actor,
                            cordon_node_after=cordon_node_after)
        return node.name


@retry_deadlocks
def mark_healthy(db: Database, who: Principal, uuid: str, *, cordon_node_after: int) -> str:
    """An admin returns an accelerator to service; a node its health cordoned is uncordoned once
    fewer than ``cordon_node_after`` of its accelerators are unhealthy. Returns the node's name."""
    require_admin(who)
    with db.tx() as s:
        row, node = _accelerator_node(s, uuid)
        if not row.healthy:
            events.record(s, "accelerator_healthy", "accelerator", uuid, who.actor, node_id=node.id,
                          reason=f"marked healthy by {who.actor} (was: {row.unhealthy_reason})")
        row.healthy, row.unhealthy_reason, row.unhealthy_since = True, None, None
        # the latest sample too, so placement may use it at once; a failing GPU's next sample cordons it again
        s.execute(update(SampleRow).where(SampleRow.uuid == uuid).values(healthy=True))
        if node.health_cordoned and (cordon_node_after <= 0 or _unhealthy_count(s, node.id) < cordon_node_after):
            node.cordoned, node.health_cordoned = False, False
            events.record(s, "node_uncordoned", "node", node.name, who.actor, node_id=node.id,
                          reason="fewer unhealthy accelerators than GPUPOOL_UNHEALTHY_GPUS_TO_CORDON_NODE")
        return node.name
