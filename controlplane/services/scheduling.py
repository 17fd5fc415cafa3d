"""One scheduling cycle: Snapshot from the database -> pure schedule() -> apply the Decision.

The Decision is applied in one transaction; each placement in its own savepoint that
re-checks the job is still pending and the nodes usable, and the database triggers and
CHECK constraints refuse any slice that no longer fits: that placement is skipped.
"""

from __future__ import annotations

import logging
from dataclasses import asdict

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from controlplane.core.requests import request_from_resources
from controlplane.core.resources import Accelerator, Node, Request
from controlplane.core.snapshot import (Decision, MemberPlacement, PendingJob, PendingReason, Queue,
                                        RunningJob, Snapshot)
from controlplane.core.resources import SliceGrant
from controlplane.db.base import now
from controlplane.db.database import Database, retry_deadlocks
from controlplane.db.models import (AcceleratorRow, AttemptRow, JobRow, MemberRow, NodeRow,
                                    QueueRow, SampleRow, SliceRow, TeamRow)
from controlplane.services import events, lifecycle
from workloads.specs import parse_job_spec

log = logging.getLogger("gpupool.scheduling")


class _Skip(Exception):
    pass


class SchedulingService:
    """Builds snapshots and applies decisions; caches each job's parsed Request."""

    def __init__(self, db: Database, *, port_range: tuple[int, int] = (29500, 29999)):
        self.db = db
        self.port_range = port_range
        self._requests: dict[int, tuple[Request, int, bool]] = {}
        self._reasons: dict[int, dict | None] = {}
        self.invalid: dict[int, str] = {}

    def _request(self, job_id: int, spec_json: dict | None = None, s=None) -> tuple[Request, int, bool]:  # noqa: ANN001
        hit = self._requests.get(job_id)
        if hit is None:
            if spec_json is None:
                spec_json = s.scalar(select(JobRow.spec).where(JobRow.id == job_id))
            try:
                spec = parse_job_spec(spec_json)
                hit = (request_from_resources(spec.resources.model_dump()), int(spec.min_runtime_s), bool(spec.preemptible))
            except Exception as err:  # noqa: BLE001 - a stored spec this version cannot read
                self.invalid[job_id] = f"stored spec no longer valid: {str(err).splitlines()[0][:300]}"
                hit = (Request(), 0, True)
            self._requests[job_id] = hit
        return hit

    def invalid_reasons(self) -> dict[str, PendingReason]:
        """Pending jobs whose spec cannot be read: never placed, and they say why."""
        return {str(j): PendingReason("invalid", msg, unschedulable=True) for j, msg in self.invalid.items()}

    def has_work(self) -> bool:
        """Anything to decide? (pending jobs); cheap, so idle pools skip whole cycles."""
        with self.db.read() as s:
            return s.scalar(select(JobRow.id).where(JobRow.status == "pending").limit(1)) is not None

    def snapshot(self, ts: float) -> Snapshot:
        with self.db.read() as s:
            teams = dict(s.execute(select(TeamRow.id, TeamRow.name)).all())
            queue_rows = list(s.scalars(select(QueueRow)))
            qname = {q.id: f"{teams[q.team_id]}/{q.name}" for q in queue_rows}
            queues = [Queue(name=qname[q.id], team=teams[q.team_id], guarantee_milli=q.guarantee_milli,
                            limit_milli=q.limit_milli, weight=q.weight) for q in queue_rows]
            nodes: dict[int, Node] = {}
            for n in s.scalars(select(NodeRow).order_by(NodeRow.id)):
                nodes[n.id] = Node(name=n.name, cpu_milli=n.cpu_milli, memory_mib=n.memory_mib,
                                   labels=dict(n.labels or {}),
                                   cordoned=n.cordoned or n.state == "draining",
                                   ready=n.state != "not_ready")
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
            rows = s.execute(select(JobRow.id, JobRow.queue_id, JobRow.priority, JobRow.pending_reason)
                             .where(JobRow.status == "pending").order_by(JobRow.id)).all()
            missing = [r[0] for r in rows if r[0] not in self._requests]
            for start in range(0, len(missing), 500):  # specs only for jobs not parsed before
                chunk = missing[start:start + 500]
                for job_id, spec_json in s.execute(select(JobRow.id, JobRow.spec).where(JobRow.id.in_(chunk))):
                    self._request(job_id, spec_json)
            for job_id, queue_id, priority, reason in rows:
                req, _, preemptible = self._request(job_id, None, s)
                self._reasons[job_id] = reason
                if job_id in self.invalid:
                    continue
                pending.append(PendingJob(job_id=str(job_id), queue=qname.get(queue_id, "?"),
                                          request=req, priority=priority, submitted_seq=job_id,
                                          preemptible=preemptible))
            running = []
            q = (select(JobRow, AttemptRow).join(AttemptRow, AttemptRow.job_id == JobRow.id)
                 .where(JobRow.status.in_(("scheduled", "running")), AttemptRow.active.is_(True),
                        AttemptRow.stop_kind.is_(None)))
            for job, attempt in s.execute(q):
                req, min_runtime, preemptible = self._request(job.id, job.spec)
                members = tuple(MemberPlacement(
                    rank=m["rank"], node=m["node"], cpu_milli=m.get("cpu_milli", 0),
                    memory_mib=m.get("memory_mib", 0),
                    slices=tuple(SliceGrant(x["accelerator_uuid"], x["compute_milli"], x["memory_mib"])
                                 for x in m["slices"])) for m in attempt.placement)
                running.append(RunningJob(job_id=str(job.id), queue=qname.get(job.queue_id, "?"),
                                          request=req, members=members, priority=job.priority,
                                          started_at=job.started_at or attempt.created_at,
                                          min_runtime_s=min_runtime, preemptible=preemptible))
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
                if job is not None and job.status in ("scheduled", "running"):
                    lifecycle.request_stop(s, job, "preempt", pre.reason, actor)
            changes = []
            for job_id, reason in decision.pending.items():
                value = {"code": reason.code, "message": reason.message,
                         "details": dict(reason.details), "unschedulable": reason.unschedulable}
                if self._reasons.get(int(job_id)) != value:
                    changes.append({"b_id": int(job_id), "b_reason": value})
            if changes:
                from sqlalchemy import bindparam

                t = JobRow.__table__
                s.connection().execute(update(t).where(t.c.id == bindparam("b_id"), t.c.status == "pending")
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
            if node.state != "ready" or node.cordoned:
                raise _Skip(f"node {m.node} is {node.state}{' and cordoned' if node.cordoned else ''}")
            nodes.append(node)
        done = s.execute(update(JobRow).where(JobRow.id == job_id, JobRow.status == "pending")
                         .values(status="scheduled", attempt=JobRow.attempt + 1, pending_reason=None,
                                 status_reason="scheduled", endpoint=None, exit_code=None))
        if done.rowcount != 1:
            raise _Skip("job is no longer pending")
        job = s.get(JobRow, job_id)
        s.refresh(job)
        master = nodes[0]
        port = self._free_port(s, master.id)
        placement = [{"rank": m.rank, "node": m.node, "cpu_milli": m.cpu_milli,
                      "memory_mib": m.memory_mib, "slices": [asdict(g) for g in m.slices]}
                     for m in p.members]
        attempt = AttemptRow(job_id=job_id, number=job.attempt, active=True, master_node_id=master.id,
                             master_addr=master.address, master_port=port, placement=placement,
                             created_at=now())
        s.add(attempt)
        s.flush()
        for m, node in zip(p.members, nodes):
            member = MemberRow(attempt_id=attempt.id, job_id=job_id, rank=m.rank, node_id=node.id,
                               cpu_milli=m.cpu_milli, memory_mib=m.memory_mib, state="assigned",
                               delivered=False)
            s.add(member)
            s.flush()
            for g in m.slices:
                s.add(SliceRow(member_id=member.id, accelerator_uuid=g.accelerator_uuid,
                               compute_milli=g.compute_milli, memory_mib=g.memory_mib))
            s.flush()  # the capacity trigger + CHECK run here; IntegrityError -> skipped
        events.record(s, "scheduled", "job", job_id, actor, job_id=job_id, team_id=job.team_id,
                      reason=f"attempt {job.attempt} on {', '.join(sorted({m.node for m in p.members}))}",
                      data={"attempt": job.attempt, "placement": placement})
        return {n.id for n in nodes}

    def _free_port(self, s, node_id: int) -> int:  # noqa: ANN001
        used = set(s.scalars(select(AttemptRow.master_port).where(
            AttemptRow.master_node_id == node_id, AttemptRow.active.is_(True))))
        lo, hi = self.port_range
        for port in range(lo, hi + 1):
            if port not in used:
                return port
        raise _Skip(f"no free rendezvous port in {lo}-{hi} on the rank-0 node")

    def forget(self, job_ids: list[int]) -> None:
        for j in job_ids:
            self._requests.pop(j, None)
            self._reasons.pop(j, None)
