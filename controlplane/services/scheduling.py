"""One scheduling cycle: Snapshot from the database -> pure schedule() -> apply the Decision.

The Decision is applied in one transaction; each placement in its own savepoint that
re-checks the job is still pending and the nodes usable, and the database triggers and
CHECK constraints refuse any slice that no longer fits: that placement is skipped.
"""

from __future__ import annotations

import logging
from dataclasses import asdict

from sqlalchemy import bindparam, select, update
from sqlalchemy.exc import IntegrityError

from controlplane.core.requests import request_from_json
from controlplane.core.resources import Accelerator, Node, Request, SliceGrant
from controlplane.core.snapshot import (Decision, MemberPlacement, PendingJob, PendingReason, Queue,
                                        RunningJob, Snapshot)
from controlplane.core.states import (ACTIVE_STATES, JobState, MemberState, NodeState, PendingCode,
                                      StopKind)
from controlplane.db.base import now
from controlplane.db.database import Database, retry_deadlocks
from controlplane.db.models import (AcceleratorRow, AttemptRow, JobRow, MemberRow, NodeRow,
                                    QueueRow, SampleRow, SliceRow, TeamRow)
from controlplane.services import lifecycle
from controlplane.services.placement import members_by_attempt

log = logging.getLogger("gpupool.scheduling")


class _Skip(Exception):
    pass


class SchedulingService:
    """Builds snapshots from stored requests (never re-parsing specs) and applies decisions."""

    def __init__(self, db: Database, *, port_range: tuple[int, int] = (29500, 29999)):
        self.db = db
        self.port_range = port_range
        self._requests: dict[int, Request] = {}
        self._reasons: dict[int, dict | None] = {}
        self.invalid: dict[int, str] = {}

    def _request(self, job_id: int, stored: dict) -> Request:
        hit = self._requests.get(job_id)
        if hit is None:
            try:
                hit = request_from_json(stored)
            except (KeyError, TypeError, ValueError) as err:  # a row this version cannot read
                self.invalid[job_id] = f"stored request is not readable: {err!r}"[:300]
                hit = Request()
            self._requests[job_id] = hit
        return hit

    def invalid_reasons(self) -> dict[str, PendingReason]:
        """Pending jobs whose stored request cannot be read: never placed, and they say why."""
        return {str(j): PendingReason(PendingCode.INVALID.value, msg, unschedulable=True)
                for j, msg in self.invalid.items()}

    def has_work(self) -> bool:
        """Anything to decide? (pending jobs); cheap, so idle pools skip whole cycles."""
        with self.db.read() as s:
            return s.scalar(select(JobRow.id).where(JobRow.status == JobState.PENDING.value)
                            .limit(1)) is not None

    def snapshot(self, ts: float) -> Snapshot:
        with self.db.read() as s:
            teams = dict(s.execute(select(TeamRow.id, TeamRow.name)).all())
            queue_rows = list(s.scalars(select(QueueRow)))
            qname = {q.id: f"{teams[q.team_id]}/{q.name}" for q in queue_rows}
            queues = [Queue(name=qname[q.id], team=teams[q.team_id], guarantee_milli=q.guarantee_milli,
                            limit_milli=q.limit_milli, weight=q.weight,
                            model_guarantees_milli=tuple(sorted((q.model_guarantees or {}).items())),
                            memory_guarantee_mib=q.memory_guarantee_mib, memory_limit_mib=q.memory_limit_mib)
                      for q in queue_rows]
            nodes: dict[int, Node] = {}
            for n in s.scalars(select(NodeRow).order_by(NodeRow.id)):
                nodes[n.id] = Node(name=n.name, cpu_milli=n.cpu_milli, memory_mib=n.memory_mib,
                                   labels=dict(n.labels or {}),
                                   cordoned=n.cordoned or n.state == NodeState.DRAINING.value,
                                   ready=n.state != NodeState.NOT_READY.value)
            samples = {u: (h, um) for u, h, um in s.execute(
                select(SampleRow.uuid, SampleRow.healthy, SampleRow.unmanaged_memory_mib))}
            A = AcceleratorRow
            for a in s.execute(select(A.uuid, A.node_id, A.index, A.vendor, A.model, A.memory_mib,
                                      A.labels, A.numa_node, A.interconnect_domain, A.healthy,
                                      A.allocated_milli, A.allocated_memory_mib)
                               .order_by(A.node_id, A.index)):
                healthy, unmanaged = samples.get(a.uuid, (True, 0))
                if a.node_id in nodes:
                    nodes[a.node_id].accelerators.append(Accelerator(
                        uuid=a.uuid, node=nodes[a.node_id].name, index=a.index, vendor=a.vendor,
                        model=a.model, memory_mib=a.memory_mib, labels=dict(a.labels or {}),
                        numa_node=a.numa_node, interconnect_domain=a.interconnect_domain,
                        healthy=a.healthy and healthy, allocated_milli=a.allocated_milli,
                        allocated_memory_mib=a.allocated_memory_mib, unmanaged_memory_mib=unmanaged))
            for node_id, cpu, mem in s.execute(select(MemberRow.node_id, MemberRow.cpu_milli,
                                                      MemberRow.memory_mib)
                                               .where(MemberRow.state.in_(lifecycle.LIVE))):
                if node_id in nodes:
                    nodes[node_id].allocated_cpu_milli += cpu
                    nodes[node_id].allocated_memory_mib += mem
            pending = []
            rows = s.execute(select(JobRow.id, JobRow.queue_id, JobRow.priority, JobRow.pending_reason,
                                    JobRow.preemptible, JobRow.max_runtime_s)
                             .where(JobRow.status == JobState.PENDING.value,
                                    (JobRow.not_before.is_(None)) | (JobRow.not_before <= ts))
                             .order_by(JobRow.id)).all()
            missing = [r[0] for r in rows if r[0] not in self._requests]
            for start in range(0, len(missing), 500):  # stored requests only for jobs not read before
                chunk = missing[start:start + 500]
                for job_id, stored in s.execute(select(JobRow.id, JobRow.request).where(JobRow.id.in_(chunk))):
                    self._request(job_id, stored)
            for job_id, queue_id, priority, reason, preemptible, max_runtime in rows:
                req = self._requests[job_id]
                self._reasons[job_id] = reason
                if job_id in self.invalid:
                    continue
                pending.append(PendingJob(job_id=str(job_id), queue=qname.get(queue_id, "?"),
                                          request=req, priority=priority, submitted_seq=job_id,
                                          preemptible=preemptible, max_runtime_s=max_runtime))
            running = []
            q = (select(JobRow, AttemptRow).join(AttemptRow, AttemptRow.job_id == JobRow.id)
                 .where(JobRow.status.in_([st.value for st in ACTIVE_STATES]),
                        AttemptRow.active.is_(True), AttemptRow.stop_kind.is_(None)))
            active = s.execute(q).all()
            placed = members_by_attempt(s, [attempt.id for _, attempt in active], live_only=True)
            for job, attempt in active:
                members = tuple(MemberPlacement(
                    rank=m["rank"], node=m["node"], cpu_milli=m["cpu_milli"], memory_mib=m["memory_mib"],
                    slices=tuple(SliceGrant(x["accelerator_uuid"], x["compute_milli"], x["memory_mib"])
                                 for x in m["slices"])) for m in placed.get(attempt.id, []))
                running.append(RunningJob(job_id=str(job.id), queue=qname.get(job.queue_id, "?"),
                                          request=self._request(job.id, job.request), members=members,
                                          priority=job.priority,
                                          started_at=job.started_at or attempt.created_at,
                                          min_runtime_s=job.min_runtime_s, preemptible=job.preemptible,
                                          max_runtime_s=job.max_runtime_s))
        live = {int(p.job_id) for p in pending} | {int(r.job_id) for r in running}
        live |= {int(r[0]) for r in rows}
        for gone in [j for j in self._requests if j not in live]:  # keep the caches bounded
            self._requests.pop(gone, None)
            self._reasons.pop(gone, None)
            self.invalid.pop(gone, None)
        return Snapshot(nodes=list(nodes.values()), queues=queues, pending=pending,
                        running=running, now=ts)

    @retry_deadlocks
    def apply(self, decision: Decision, actor: str = "scheduler") -> dict:
        """Apply placements (each re-checked), preemptions and pending reasons in one transaction."""
        placed = skipped = 0
        with self.db.tx() as s:
            names = {m.node for p in decision.placements for m in p.members}
            node_rows = {n.name: n for n in s.scalars(select(NodeRow).where(NodeRow.name.in_(names)))} if names else {}
            touched: set[int] = set()
            for p in decision.placements:
                try:
                    with s.begin_nested():
                        touched |= self._place(s, p, node_rows, actor)
                    placed += 1
                except (_Skip, IntegrityError) as err:
                    skipped += 1
                    log.info("placement of job %s skipped: %s", p.job_id, str(err).splitlines()[0][:200])
            lifecycle.bump_epochs(s, touched)
            for pre in decision.preemptions:
                job = s.scalar(select(JobRow).where(JobRow.id == int(pre.job_id)).with_for_update())
                if job is not None and JobState(job.status) in ACTIVE_STATES:
                    lifecycle.request_stop(s, job, StopKind.PREEMPT, pre.reason, actor)
            changes = []
            for job_id, reason in decision.pending.items():
                value = {"code": reason.code, "message": reason.message,
                         "details": dict(reason.details), "unschedulable": reason.unschedulable}
                if self._reasons.get(int(job_id)) != value:
                    changes.append({"b_id": int(job_id), "b_reason": value})
            if changes:
                t = JobRow.__table__
                s.connection().execute(update(t).where(t.c.id == bindparam("b_id"),
                                                   t.c.status == JobState.PENDING.value)
                                       .values(pending_reason=bindparam("b_reason")), changes)
        for change in changes:  # only once committed
            self._reasons[change["b_id"]] = change["b_reason"]
        return {"placed": placed, "skipped": skipped, "preempted": len(decision.preemptions),
                "pending": len(decision.pending)}

    def _place(self, s, p, node_rows: dict[str, NodeRow], actor: str) -> set[int]:  # noqa: ANN001
        job_id = int(p.job_id)
        nodes = []
        for m in p.members:
            node = node_rows.get(m.node)
            if node is None:
                raise _Skip(f"node {m.node} is gone")
            s.refresh(node)
            if node.state != NodeState.READY.value or node.cordoned:
                raise _Skip(f"node {m.node} is {node.state}{' and cordoned' if node.cordoned else ''}")
            nodes.append(node)
        job = s.get(JobRow, job_id)
        if job is None:
            raise _Skip("job is gone")
        s.refresh(job)
        if job.status != JobState.PENDING.value:
            raise _Skip("job is no longer pending")
        master = nodes[0]
        port = self._free_port(s, master.id)
        placement = [{"rank": m.rank, "node": m.node, "cpu_milli": m.cpu_milli,
                      "memory_mib": m.memory_mib, "slices": [asdict(g) for g in m.slices]}
                     for m in p.members]
        number = job.attempt + 1
        try:
            lifecycle.transition(
                s, job, JobState.SCHEDULED, actor=actor, attempt=number, pending_reason=None,
                endpoint=None, exit_code=None, reason_code=None, not_before=None,
                reason=f"attempt {number} on {', '.join(sorted({m.node for m in p.members}))}",
                data={"attempt": number, "placement": placement})
        except lifecycle.StaleState as err:
            raise _Skip(str(err)) from None
        ts = now()
        attempt = AttemptRow(job_id=job_id, number=number, active=True, master_node_id=master.id,
                             master_addr=master.address, master_port=port, created_at=ts)
        s.add(attempt)
        s.flush()
        for m, node in zip(p.members, nodes):
            member = MemberRow(attempt_id=attempt.id, job_id=job_id, rank=m.rank, node_id=node.id,
                               cpu_milli=m.cpu_milli, memory_mib=m.memory_mib,
                               state=MemberState.ASSIGNED.value, delivered=False)
            s.add(member)
            s.flush()
            for g in m.slices:
                s.add(SliceRow(member_id=member.id, accelerator_uuid=g.accelerator_uuid,
                               compute_milli=g.compute_milli, memory_mib=g.memory_mib, allocated_at=ts))
            s.flush()  # the capacity trigger + CHECK run here; IntegrityError -> skipped
        # read after the trigger locked the accelerators: a GPU cordoned since the snapshot is refused
        uuids = [g.accelerator_uuid for m in p.members for g in m.slices]
        sick = s.scalars(select(AcceleratorRow.uuid).where(AcceleratorRow.uuid.in_(uuids),
                                                           AcceleratorRow.healthy.is_(False))).first() if uuids else None
        if sick is not None:
            raise _Skip(f"accelerator {sick} became unhealthy")
        return {n.id for n in nodes}

    def _free_port(self, s, node_id: int) -> int:  # noqa: ANN001
        used = set(s.scalars(select(AttemptRow.master_port).where(
            AttemptRow.master_node_id == node_id, AttemptRow.active.is_(True))))
        lo, hi = self.port_range
        for port in range(lo, hi + 1):
            if port not in used:
                return port
        raise _Skip(f"no free rendezvous port in {lo}-{hi} on the rank-0 node")
