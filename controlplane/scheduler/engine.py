"""One scheduling cycle: ``schedule(snapshot, config) -> Decision``.

Jobs come in weighted-DRF order between queues (priority, then age within a queue). Each job
is checked against its queue's limit, placed member by member (a gang all-or-nothing through
the Plan), else tried with preemption (lower priority in its queue, or reclaim from queues
borrowing beyond their guarantee), else explained. A blocked queue head gets a reservation
(with an expected start when the jobs in its way declare run times) so backfilled jobs cannot
starve it. Pure: no clock, I/O or unseeded randomness.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

from controlplane.core.resources import WHOLE
from controlplane.core.snapshot import (
    Decision, MemberPlacement, PendingCode, PendingJob, PendingReason, Placement, Preemption, Snapshot,
)
from controlplane.scheduler import policies
from controlplane.scheduler.config import SchedulerConfig
from controlplane.scheduler.explain import capacity_reason, constraint_reason
from controlplane.scheduler.frag import TaskShape, Workload
from controlplane.scheduler.framework import Context, MemberShape, Plan
from controlplane.scheduler.place import claims_of, place_gang
from controlplane.scheduler.preempt import Preemptor, Victim
from controlplane.scheduler.queues import QuotaBook, fair_order
from controlplane.scheduler.reserve import Reservations
from controlplane.scheduler.state import ClusterState


def validate(job: PendingJob) -> str | None:
    """A message naming what is wrong with the request, or None."""
    r = job.request
    if (min(r.cpu_milli, r.memory_mib, r.gpus, r.gpu_milli, r.gpu_memory_mib) >= 0 and r.gang >= 1
            and r.gpu_milli <= WHOLE and not (r.gpus and (r.gpu_milli not in (0, WHOLE) or r.gpu_memory_mib))
            and (job.max_runtime_s is None or job.max_runtime_s > 0)):
        return None
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
    if job.max_runtime_s is not None and not job.max_runtime_s > 0:
        problems.append(f"max_runtime_s must be positive (got {job.max_runtime_s})")
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
    return Cycle(snapshot, config or SchedulerConfig()).run()


class Cycle:
    """One pass over the pending jobs on one Plan (committed after every placed job)."""

    def __init__(self, snapshot: Snapshot, config: SchedulerConfig):
        self.snapshot, self.config = snapshot, config
        self.profile = policies.profile(config.policy, config.weights)
        self.state = ClusterState.from_nodes(snapshot.nodes)
        workload = (Workload(list(config.workload), [1.0] * len(config.workload))
                    if config.workload else default_workload(snapshot))
        self.ctx = Context(self.state, workload)
        self.profile.prepare(self.ctx)
        self.book = QuotaBook(snapshot)
        self.plan = Plan(self.ctx, self.book)
        self.preemptor = Preemptor(self.plan, self.book, self.profile, snapshot.running,
                                   snapshot.now, config.max_preemption_attempts)
        self.reservations = Reservations(self.plan, self.profile, config, snapshot.now)
        for r in snapshot.running:
            if r.expected_end is not None:
                self.reservations.expect_end(r.job_id, r.expected_end,
                                             claims_of(self.state, r.members))
        self.decision = Decision()
        self.no_fit: dict[tuple, PendingReason] = {}  # valid until a preemption frees room
        self.never: dict[tuple, PendingReason | None] = {}
        self.shapes: dict[MemberShape, MemberShape] = {}

    def run(self) -> Decision:
        for job in fair_order(list(self.snapshot.pending), self.book):
            reason = self.consider(job)
            if reason is not None:
                self.decision.pending[job.job_id] = reason
        return self.decision

    def consider(self, job: PendingJob) -> PendingReason | None:
        problem = validate(job)
        if problem:
            return PendingReason(PendingCode.INVALID, f"invalid request: {problem}", {},
                                 unschedulable=True)
        quota = self.book.over_limit(job)
        if quota:
            return PendingReason(PendingCode.QUOTA, quota, {"queue": job.queue})
        head = self.reservations.blocked_heads.get(job.queue)
        if not self.config.backfill and head is not None:
            return PendingReason(PendingCode.PRIORITY, f"waiting behind job {head}, the head of "
                                 f"queue {job.queue} (backfill is off)", {"head": head})
        ends_at = math.inf if job.max_runtime_s is None else self.snapshot.now + job.max_runtime_s
        shape = MemberShape.of(job.request, ends_at)
        shape = self.shapes.setdefault(shape, shape)  # one object per shape: cache keys compare by identity
        gang = job.request.gang
        key = (shape, gang)
        if key not in self.never:
            self.never[key] = constraint_reason(self.ctx, shape, gang)
        if self.never[key] is not None:
            return self.never[key]
        reason = self.no_fit.get(key)
        if reason is None:
            members, fitted = place_gang(self.plan, self.profile, shape, gang)
            if members is not None:
                return self.accept(job, members, ())
            reason = self.no_fit[key] = capacity_reason(self.ctx, shape, gang, fitted)
        if self.config.preemption:
            preempted = self.preemptor.try_preempt(job, shape)
            if preempted is not None:
                return self.accept(job, preempted.members, preempted.victims)
            reason = self.preemptor.annotate(job, reason)
        return self.reservations.reserve_for(job, shape, reason)

    def accept(self, job: PendingJob, members: list[MemberPlacement],
               victims: Sequence[Victim]) -> PendingReason | None:
        """Charge the job to its queue, commit the plan and record the placement; a placement
        past the queue's GPU-memory limit is rolled back instead (its memory is known only now)."""
        held = self.book.held(members)
        too_much = self.book.over_memory_limit(job.queue, held)
        if too_much:
            self.plan.rollback()
            return PendingReason(PendingCode.QUOTA, too_much, {"queue": job.queue})
        self.plan.charge(job.queue, job.request, held)
        self.plan.commit()
        for v in victims:
            self.decision.preemptions.append(
                Preemption(v.job.job_id, self.preemptor.reason(v, job), job.job_id))
            self.reservations.forget(v.job.job_id)
        if victims:
            self.no_fit.clear()  # room was freed: cached "does not fit" answers are stale
        self.decision.placements.append(
            Placement(job.job_id, tuple(members), tuple(v.job.job_id for v in victims)))
        if job.max_runtime_s is not None:
            self.reservations.expect_end(job.job_id, self.snapshot.now + job.max_runtime_s,
                                         claims_of(self.state, members))
        return None


__all__ = ["Cycle", "SchedulerConfig", "schedule", "validate"]
