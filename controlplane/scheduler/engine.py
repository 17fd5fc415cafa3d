"""One scheduling cycle: ``schedule(snapshot, config) -> Decision``.

Jobs come in weighted-DRF order between queues (priority, then age within a queue). Each job
is checked against its queue's limit, placed member by member (a gang all-or-nothing through
one Plan), else tried with preemption (lower priority in its queue, or reclaim from queues
borrowing beyond their guarantee), else explained. A blocked queue head gets a reservation
so backfilled small jobs cannot starve it. Pure: no clock, I/O or unseeded randomness.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from controlplane.core.resources import WHOLE, SliceGrant
from controlplane.core.snapshot import (
    Decision, MemberPlacement, PendingJob, PendingReason, Placement, Snapshot,
)
from controlplane.scheduler import policies
from controlplane.scheduler.explain import capacity_reason, constraint_reason
from controlplane.scheduler.frag import TaskShape, Workload
from controlplane.scheduler.framework import Context, MemberShape, Plan, Profile
from controlplane.scheduler.plugins.fit import allowed_mask, candidates, grants_of
from controlplane.scheduler.preempt import Preemptor
from controlplane.scheduler.queues import QuotaBook, fair_order
from controlplane.scheduler.state import Claim, ClusterState


@dataclass(frozen=True)
class SchedulerConfig:
    """Scheduler settings: the placement policy by name (or explicit plugin weights) and actions."""

    policy: str = policies.DEFAULT_POLICY
    weights: dict[str, float] | None = None  # plugin name -> weight; overrides the policy's
    preemption: bool = True
    backfill: bool = True  # False: a blocked queue head holds back the rest of its queue
    max_reservations: int = 4
    max_preemption_attempts: int = 32
    workload: tuple[TaskShape, ...] = ()  # fragmentation target; empty: shapes of the jobs


def validate(job: PendingJob) -> str | None:
    """A message naming what is wrong with the request, or None."""
    r = job.request
    problems = []
    for name in ("cpu_milli", "memory_mib", "gpus", "gpu_milli", "gpu_memory_mib"):
        if getattr(r, name) < 0:
            problems.append(f"{name} is negative ({getattr(r, name)})")
    if r.gang < 1:
        problems.append(f"gang must be at least 1 (got {r.gang})")
    if r.gpu_milli > WHOLE:
        problems.append(f"gpu_milli {r.gpu_milli} is above {WHOLE}; ask for whole gpus instead")
    if r.gpus and (r.gpu_milli not in (0, WHOLE) or r.gpu_memory_mib):
        problems.append("ask for either whole gpus or a fraction (gpu_milli/gpu_memory_mib), not both")
    return "; ".join(problems) or None


def default_workload(snapshot: Snapshot) -> Workload:
    """Typical shapes of the pool's own jobs (pending and running) for fragmentation."""
    counts: Counter[tuple] = Counter()
    for job in [*snapshot.pending, *snapshot.running]:
        r = job.request
        counts[(r.cpu_milli, r.memory_mib, r.gpus, r.gpu_milli, r.gpu_memory_mib,
                r.constraints.models)] += r.gang
    shapes: Counter[TaskShape] = Counter()
    for (cpu, mem, whole, milli, gpu_mem, models), n in counts.items():
        fractional = whole == 0 and (milli > 0 or gpu_mem > 0)
        shapes[TaskShape(cpu, whole or (1 if fractional else 0), WHOLE if whole else milli,
                         models, mem)] += n
    return Workload.typical(shapes.elements())


def schedule(snapshot: Snapshot, config: SchedulerConfig | None = None) -> Decision:
    """Decide placements, preemptions and a pending reason for every other pending job."""
    config = config or SchedulerConfig()
    prof = policies.profile(config.policy, config.weights)
    return Cycle(snapshot, config, prof).run()


@dataclass
class Cycle:
    snapshot: Snapshot
    config: SchedulerConfig
    profile: Profile
    decision: Decision = field(default_factory=Decision)

    def __post_init__(self) -> None:
        self.state = ClusterState.from_nodes(self.snapshot.nodes)
        self.ctx = Context(self.state)
        workload = (Workload(list(self.config.workload), [1.0] * len(self.config.workload))
                    if self.config.workload else default_workload(self.snapshot))
        policies.prepare(self.ctx, self.profile, workload)
        model_of = {a.uuid: a.model for n in self.snapshot.nodes for a in n.accelerators}
        self.book = QuotaBook(self.snapshot, model_of)
        self.plan = Plan(self.state)
        self.preemptor = Preemptor(self)
        self.no_fit: dict[tuple, PendingReason] = {}  # valid until something is released
        self.never: dict[tuple, PendingReason | None] = {}
        self.blocked_heads: dict[str, str] = {}  # queue -> job id holding the queue back
        self.reservations = 0

    # ---- the cycle ------------------------------------------------------------------------
    def run(self) -> Decision:
        for job in fair_order(list(self.snapshot.pending), self.book):
            reason = self.consider(job)
            if reason is not None:
                self.decision.pending[job.job_id] = reason
        self.plan.commit()
        return self.decision

    def consider(self, job: PendingJob) -> PendingReason | None:
        problem = validate(job)
        if problem:
            return PendingReason("invalid", f"invalid request: {problem}", {}, unschedulable=True)
        quota = self.book.over_limit(job)
        if quota:
            return PendingReason("quota", quota, {"queue": job.queue})
        if not self.config.backfill and job.queue in self.blocked_heads:
            head = self.blocked_heads[job.queue]
            return PendingReason("priority", f"waiting behind job {head}, the head of queue "
                                 f"{job.queue} (backfill is off)", {"head": head})
        shape = MemberShape.of(job.request)
        never_key = (shape, job.request.gang)
        if never_key not in self.never:
            self.never[never_key] = constraint_reason(self.ctx, shape, job.request.gang)
        never = self.never[never_key]
        if never is not None:
            return never
        key = (shape, job.request.gang)
        reason = self.no_fit.get(key)
        if reason is None:
            members, fitted = self.place(job, shape)
            if members is not None:
                self.accept(job, members, ())
                return None
            reason = capacity_reason(self.ctx, shape, job.request.gang, fitted)
            self.no_fit[key] = reason
        if self.config.preemption:
            preempted = self.preemptor.try_preempt(job, shape)
            if preempted:
                return None
            reason = self.preemptor.annotate(job, reason)
        return self.reserve_for(job, shape, reason)

    # ---- placement ------------------------------------------------------------------------
    def place(self, job: PendingJob, shape: MemberShape) -> tuple[list[MemberPlacement] | None, int]:
        """Assume every member on the plan; on failure roll back and say how many fitted."""
        start = self.plan.savepoint()
        self.ctx.gang_nodes = set()
        members: list[MemberPlacement] = []
        for rank in range(job.request.gang):
            cands = candidates(self.ctx, shape)
            if not len(cands):
                self.plan.rollback(start)
                self.ctx.gang_nodes = set()
                return None, rank
            pick = self.profile.pick(self.ctx, shape, cands)
            node, grants = grants_of(self.state, shape, cands, pick)
            self.plan.assume(Claim(node, shape.cpu_milli, shape.memory_mib, grants))
            self.ctx.gang_nodes.add(node)
            uuids = self.state.uuids[node]
            members.append(MemberPlacement(
                rank, self.state.names[node],
                tuple(SliceGrant(uuids[j], milli, mib) for j, milli, mib in grants),
                shape.cpu_milli, shape.memory_mib))
        self.ctx.gang_nodes = set()
        return members, len(members)

    def accept(self, job: PendingJob, members: list[MemberPlacement],
               preempts: tuple[str, ...]) -> None:
        models: dict[str, int] = {}
        for m in members:
            for g in m.slices:
                model = self.book.model_of.get(g.accelerator_uuid, "")
                models[model] = models.get(model, 0) + g.compute_milli
        self.book.add(job.queue, job.request, models)
        self.decision.placements.append(Placement(job.job_id, tuple(members), preempts))

    def released(self) -> None:
        """Something was freed (a preemption): cached 'does not fit' answers are stale."""
        self.no_fit.clear()

    # ---- reservation (backfill without starving the head) -----------------------------------
    def reserve_for(self, job: PendingJob, shape: MemberShape,
                    reason: PendingReason) -> PendingReason:
        if reason.unschedulable or job.queue in self.blocked_heads:
            return reason
        self.blocked_heads[job.queue] = job.job_id
        if not self.config.backfill or self.reservations >= self.config.max_reservations:
            return reason
        nodes = self.closest_nodes(shape, job.request.gang)
        if not nodes:
            return reason
        self.state.reserved[nodes] = True
        self.reservations += 1
        names = [self.state.names[i] for i in nodes]
        return PendingReason(reason.code, reason.message + f"; holding {', '.join(names)} for it "
                             "so smaller jobs cannot take the room it waits for",
                             reason.details | {"reserved_nodes": names})

    def closest_nodes(self, shape: MemberShape, gang: int) -> list[int]:
        """The ``gang`` unreserved nodes that could hold a member and have the most room free."""
        s = self.state
        ever = s.node_ok & ~s.reserved & (s.cpu_cap >= shape.cpu_milli) & (s.mem_cap >= shape.memory_mib)
        free = np.zeros(s.n)
        if shape.whole or shape.milli:
            allowed = allowed_mask(self.ctx, shape.constraints)
            ever &= allowed.sum(axis=1) >= max(shape.whole, 1)
            free = np.where(allowed, s.gpu_free, 0).sum(axis=1).astype(float)
        free += s.cpu_free / 1e7
        idx = np.flatnonzero(ever)
        if len(idx) < gang:
            return []
        order = idx[np.lexsort((s.rank[idx], -free[idx]))]
        return [int(i) for i in order[:gang]]


__all__ = ["Cycle", "SchedulerConfig", "schedule", "validate", "ClusterState"]
