"""Preemption and reclaim: free room for a job by stopping the work that loses the least.

Victims are running, preemptible jobs past their minimum runtime that either have a lower
priority in the job's own queue, or belong to a queue borrowing beyond its guarantee while
the job's queue is within its own guarantee (reclaim). Victims are tried in order of least
work lost (runtime x GPU), then the set is shrunk to those actually needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from controlplane.core.snapshot import PendingJob, PendingReason, Preemption, RunningJob
from controlplane.scheduler.framework import MemberShape
from controlplane.scheduler.queues import gpus
from controlplane.scheduler.state import Claim

if TYPE_CHECKING:
    from controlplane.scheduler.engine import Cycle

MAX_VICTIMS = 64
MAX_SHRINK = 16


@dataclass(slots=True)
class Victim:
    job: RunningJob
    kind: str  # "priority" | "reclaim"
    claims: list[Claim]
    models: dict[str, int]


class Preemptor:
    def __init__(self, cycle: Cycle):
        self.cycle = cycle
        self.running = {r.job_id: r for r in cycle.snapshot.running}
        self.gone: set[str] = set()  # preempted in this cycle
        self.attempts = 0
        self.failed: set[tuple] = set()
        self.protected: dict[str, list[str]] = {}  # job id -> why some victims were spared
        self.current: list[Victim] = []  # released on the plan right now

    def claims_of(self, job: RunningJob) -> list[Claim] | None:
        state = self.cycle.state
        claims = []
        for member in job.members:
            node = state.index.get(member.node)
            if node is None:
                return None
            uuids = state.uuids[node]
            gpus_ = []
            for grant in member.slices:
                if grant.accelerator_uuid not in uuids:
                    return None
                gpus_.append((uuids.index(grant.accelerator_uuid), grant.compute_milli,
                              grant.memory_mib))
            claims.append(Claim(node, member.cpu_milli, member.memory_mib, tuple(gpus_)))
        return claims

    def victims(self, job: PendingJob) -> list[Victim]:
        cycle = self.cycle
        book = cycle.book
        in_guarantee = book.within_guarantee(job)
        now = cycle.snapshot.now
        out, spared = [], []
        for r in self.running.values():
            if r.job_id in self.gone or not r.preemptible:
                continue
            if r.queue == job.queue and r.priority < job.priority:
                kind = "priority"
            elif (in_guarantee and r.queue != job.queue and book.of(r.queue).borrowed_milli > 0):
                kind = "reclaim"
            else:
                continue
            ran = now - r.started_at
            if ran < r.min_runtime_s:
                spared.append(f"{r.job_id} has run {ran:.0f} s of its {r.min_runtime_s:.0f} s "
                              "minimum")
                continue
            claims = self.claims_of(r)
            if claims is None:
                continue
            out.append(Victim(r, kind, claims, book.models_of(r)))
        self.protected[job.job_id] = spared
        out.sort(key=lambda v: ((now - v.job.started_at) * v.job.request.total_gpu_milli,
                                v.kind != "reclaim", v.job.priority, v.job.job_id))
        return out[:MAX_VICTIMS]

    def try_preempt(self, job: PendingJob, shape: MemberShape) -> bool:
        key = (shape, job.request.gang, job.queue, job.priority)
        if key in self.failed or self.attempts >= self.cycle.config.max_preemption_attempts:
            return False
        victims = self.victims(job)
        if not victims:
            self.failed.add(key)
            return False
        self.attempts += 1
        cycle = self.cycle
        start = cycle.plan.savepoint()
        self.current: list[Victim] = []
        members = None
        for v in victims:
            if v.kind == "reclaim" and cycle.book.of(v.job.queue).borrowed_milli <= 0:
                continue
            self._set_released([*self.current, v], start)
            members, _ = cycle.place(job, shape)
            if members is not None:
                break
        if members is None:
            self._set_released([], start)
            self.failed.add(key)
            return False
        keep = list(self.current)
        for v in reversed(keep[-MAX_SHRINK:]) if len(keep) > 1 else ():
            trial = [x for x in keep if x is not v]
            self._set_released(trial, start)
            if cycle.place(job, shape)[0] is not None:
                keep = trial
        self._set_released(keep, start)
        members, _ = cycle.place(job, shape)
        if members is None:  # cannot happen: this exact set fitted before
            self._set_released([], start)
            return False
        for v in keep:
            self.gone.add(v.job.job_id)
            cycle.decision.preemptions.append(Preemption(v.job.job_id, self.reason(v, job),
                                                         job.job_id))
        cycle.accept(job, members, tuple(v.job.job_id for v in keep))
        cycle.released()
        return True

    def _set_released(self, victims: list[Victim], start: int) -> None:
        """Roll the plan back to ``start`` and release exactly ``victims`` (book follows)."""
        cycle = self.cycle
        cycle.plan.rollback(start)
        for v in self.current:
            cycle.book.add(v.job.queue, v.job.request, v.models, +1)
        self.current = []
        for v in victims:
            for claim in v.claims:
                cycle.plan.release(claim)
            cycle.book.add(v.job.queue, v.job.request, v.models, -1)
            self.current.append(v)

    def reason(self, v: Victim, job: PendingJob) -> str:
        if v.kind == "reclaim":
            q = self.cycle.book.of(job.queue).queue
            return (f"preempted: reclaimed by queue {q.name} (guarantee "
                    f"{gpus(q.guarantee_milli)} GPU) for job {job.job_id}; queue {v.job.queue} "
                    "was using more than its guarantee")
        return (f"preempted: job {job.job_id} (priority {job.priority}) in queue {job.queue} "
                f"outranks it (priority {v.job.priority})")

    def annotate(self, job: PendingJob, reason: PendingReason) -> PendingReason:
        spared = self.protected.get(job.job_id)
        if not spared:
            return reason
        return PendingReason(reason.code, reason.message + "; not preempting " + "; ".join(spared[:3]),
                             reason.details | {"protected_by_min_runtime": len(spared)},
                             reason.unschedulable)
