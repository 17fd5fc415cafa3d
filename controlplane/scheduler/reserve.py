"""Reservations for blocked queue heads, with an expected start, and time-aware backfill.

When a queue's head is blocked by capacity, the engine finds the earliest time it would fit if
running jobs end when they declared (``started_at + max_runtime_s``): it frees them in order of
their expected end on the Plan and finds the first prefix after which the whole gang fits
(galloping then binary search, since freeing more never makes room smaller). The nodes the
head would use are held until that start: only members that declare a run time ending by then
may use them (``ClusterState.free_until``). When no expected start is known (the jobs in the
way declare no run time), the nodes closest to fitting are held outright.
"""

from __future__ import annotations

import bisect
import math

import numpy as np

from controlplane.core.snapshot import PendingJob, PendingReason
from controlplane.scheduler.config import SchedulerConfig
from controlplane.scheduler.framework import MemberShape, Plan, Profile
from controlplane.scheduler.place import place_gang
from controlplane.scheduler.state import Claim

CPU_TIE_BREAK = 1e-7  # free CPU milli only orders nodes with the same free GPU milli


class Reservations:
    """The cycle's blocked heads, the nodes held for them, and the running jobs' expected ends."""

    def __init__(self, plan: Plan, profile: Profile, config: SchedulerConfig, now: float):
        self.plan, self.profile, self.config = plan, profile, config
        self.now = now
        self.blocked_heads: dict[str, str] = {}  # queue -> job id holding the queue back
        self.count = 0
        self._ends: list[tuple[float, str]] = []  # sorted (expected end, job id)
        self._claims: dict[str, list[Claim]] = {}

    def expect_end(self, job_id: str, end: float | None, claims: list[Claim] | None) -> None:
        """A running (or just placed) job holding ``claims`` until ``end`` (None: unknown)."""
        if end is not None and claims is not None:
            bisect.insort(self._ends, (end, job_id))
            self._claims[job_id] = claims

    def forget(self, job_id: str) -> None:
        """A job stopped in this cycle (preempted): its room is already free."""
        if self._claims.pop(job_id, None) is not None:
            self._ends = [e for e in self._ends if e[1] != job_id]

    # ---- the action ---------------------------------------------------------------------------
    def reserve_for(self, job: PendingJob, shape: MemberShape,
                    reason: PendingReason) -> PendingReason:
        """Hold room for a blocked queue head and say so in its reason."""
        if reason.unschedulable or job.queue in self.blocked_heads:
            return reason
        self.blocked_heads[job.queue] = job.job_id
        if not self.config.backfill or self.count >= self.config.max_reservations:
            return reason
        start, nodes = self.expected_start(shape, job.request.gang)
        if start is None:
            nodes = self.closest_nodes(shape, job.request.gang)
        if not nodes:
            return reason
        state = self.plan.state
        state.hold(nodes, -math.inf if start is None else start)
        self.count += 1
        names = [state.names[i] for i in nodes]
        if start is None:
            return reason.with_note(f"holding {', '.join(names)} for it so smaller jobs cannot "
                                    "take the room it waits for", reserved_nodes=names)
        return reason.with_note(
            f"expected to start in {start - self.now:.0f} s on {', '.join(names)} "
            "when running jobs reach their run-time limits; until then only jobs that end "
            "before it may use that room", reserved_nodes=names, expected_start=start)

    def expected_start(self, shape: MemberShape, gang: int) -> tuple[float | None, list[int]]:
        """(earliest expected end after which the gang fits, the nodes it would use)."""
        if not self._ends:
            return None, []
        plan = self.plan
        base = plan.savepoint()
        marks = [base]  # marks[k]: savepoint with the first k ends released

        def fits_after(k: int) -> list[int] | None:
            if k < len(marks) - 1:
                plan.rollback(marks[k])
                del marks[k + 1:]
            while len(marks) - 1 < k:
                for claim in self._claims[self._ends[len(marks) - 1][1]]:
                    plan.release(claim)
                marks.append(plan.savepoint())
            mark = plan.savepoint()
            members, _ = place_gang(plan, self.profile, shape, gang)
            if members is None:
                return None
            plan.rollback(mark)
            return sorted({plan.state.index[m.node] for m in members})

        lo, hi, found = 0, 1, None  # the gang does not fit with 0 released; gallop up
        n = len(self._ends)
        while found is None:
            found = fits_after(min(hi, n))
            if found is None:
                if hi >= n:
                    plan.rollback(base)
                    return None, []
                lo, hi = hi, hi * 2
        hi = min(hi, n)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            nodes = fits_after(mid)
            if nodes is None:
                lo = mid
            else:
                hi, found = mid, nodes
        plan.rollback(base)
        return max(self._ends[hi - 1][0], self.now), found  # an overdue job is being stopped

    def closest_nodes(self, shape: MemberShape, gang: int) -> list[int]:
        """The ``gang`` unreserved nodes that could hold a member and have the most room free."""
        s = self.plan.state
        ever = s.usable() & (s.cpu_cap >= shape.cpu_milli) & (s.mem_cap >= shape.memory_mib)
        free = np.zeros(s.n)
        if shape.uses_gpu:
            allowed = self.plan.ctx.allowed(shape.constraints)
            ever &= allowed.sum(axis=1) >= max(shape.whole, 1)
            free = np.where(allowed, s.gpu_free, 0).sum(axis=1).astype(float)
        free += s.cpu_free * CPU_TIE_BREAK
        idx = np.flatnonzero(ever)
        if len(idx) < gang:
            return []
        order = idx[np.lexsort((s.rank[idx], -free[idx]))]
        return [int(i) for i in order[:gang]]
