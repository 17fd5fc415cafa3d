"""Preemption and reclaim: free room for a job by stopping the work that loses the least.

Victims are running, preemptible jobs past their minimum runtime that either have a lower
priority in the job's own queue, or belong to a queue borrowing beyond its guarantee while
the job's queue is within its own guarantee (reclaim). For each member the engine looks at
the nodes where victims run, frees the cheapest victims there (least work lost = runtime x
GPU) until the member fits, and keeps the node where that costs least. A gang is all or
nothing: if one member cannot be made to fit, every release and placement is rolled back.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from controlplane.core.resources import WHOLE, SliceGrant
from controlplane.core.snapshot import (
    MemberPlacement, PendingJob, PendingReason, Preemption, RunningJob,
)
from controlplane.scheduler.framework import Candidates, MemberShape
from controlplane.scheduler.plugins.fit import allowed_mask, candidates, grants_of
from controlplane.scheduler.queues import gpus
from controlplane.scheduler.state import Claim

if TYPE_CHECKING:
    from controlplane.scheduler.engine import Cycle

MAX_NODES = 16  # nodes examined per member (the most promising by victims' room)
MAX_VICTIMS = 512  # victims considered per attempt (least work lost first)


@dataclass(slots=True, eq=False)
class Victim:
    job: RunningJob
    claims: list[Claim]
    models: dict[str, int]
    lost_work: float
    room: dict[int, tuple[int, int, tuple[tuple[int, int], ...]]]  # node -> cpu, mem, (gpu, milli)

    def kind(self, job: PendingJob) -> str:
        return "priority" if self.job.queue == job.queue else "reclaim"


class Preemptor:
    def __init__(self, cycle: Cycle):
        self.cycle = cycle
        now = cycle.snapshot.now
        self.by_queue: dict[str, list[tuple[float, str, RunningJob]]] = {}
        self.spared: dict[str, list[tuple[str, int]]] = {}  # queue -> (why, priority)
        for r in cycle.snapshot.running:
            if not r.preemptible:
                continue
            if now - r.started_at < r.min_runtime_s:
                self.spared.setdefault(r.queue, []).append(
                    (f"{r.job_id} has run {now - r.started_at:.0f} s of its "
                     f"{r.min_runtime_s:.0f} s minimum", r.priority))
                continue
            lost = (now - r.started_at) * r.request.total_gpu_milli
            self.by_queue.setdefault(r.queue, []).append((lost, r.job_id, r))
        for jobs in self.by_queue.values():
            jobs.sort(key=lambda t: (t[0], t[1]))
        self.gone: set[str] = set()  # preempted in this cycle
        self.cache: dict[str, Victim | None] = {}
        self.attempts = 0
        self.failed: set[tuple] = set()
        self.protected: dict[str, list[str]] = {}  # job id -> why some victims were spared

    # ---- who may be preempted -----------------------------------------------------------------
    def victim(self, r: RunningJob) -> Victim | None:
        if r.job_id not in self.cache:
            self.cache[r.job_id] = self._victim(r)
        return self.cache[r.job_id]

    def _victim(self, r: RunningJob) -> Victim | None:
        state = self.cycle.state
        claims = []
        for member in r.members:
            node = state.index.get(member.node)
            if node is None:
                return None
            uuids = state.uuids[node]
            grants = []
            for grant in member.slices:
                if grant.accelerator_uuid not in uuids:
                    return None
                grants.append((uuids.index(grant.accelerator_uuid), grant.compute_milli,
                               grant.memory_mib))
            claims.append(Claim(node, member.cpu_milli, member.memory_mib, tuple(grants)))
        now = self.cycle.snapshot.now
        room: dict[int, tuple[int, int, tuple[tuple[int, int], ...]]] = {}
        for c in claims:
            cpu, mem, gpus_ = room.get(c.node, (0, 0, ()))
            room[c.node] = (cpu + c.cpu_milli, mem + c.memory_mib,
                            gpus_ + tuple((j, m) for j, m, _ in c.gpus))
        return Victim(r, claims, self.cycle.book.models_of(r),
                      (now - r.started_at) * r.request.total_gpu_milli, room)

    def eligible(self, job: PendingJob) -> list[Victim]:
        """Up to MAX_VICTIMS victims, least work lost first."""
        book = self.cycle.book
        streams = [[t for t in self.by_queue.get(job.queue, []) if t[2].priority < job.priority]]
        spared = [why for why, prio in self.spared.get(job.queue, []) if prio < job.priority]
        if book.within_guarantee(job):
            for queue, jobs in self.by_queue.items():
                if queue != job.queue and book.of(queue).borrowed_milli > 0:
                    streams.append(jobs)
            spared += [why for queue, items in self.spared.items() if queue != job.queue
                       and book.of(queue).borrowed_milli > 0 for why, _ in items]
        self.protected[job.job_id] = spared
        out = []
        for _, job_id, r in heapq.merge(*streams, key=lambda t: (t[0], t[1])):
            if job_id in self.gone:
                continue
            v = self.victim(r)
            if v is not None:
                out.append(v)
                if len(out) >= MAX_VICTIMS:
                    break
        return out

    # ---- the action -----------------------------------------------------------------------------
    def try_preempt(self, job: PendingJob, shape: MemberShape) -> bool:
        key = (shape, job.request.gang, job.queue, job.priority)
        if key in self.failed or self.attempts >= self.cycle.config.max_preemption_attempts:
            return False
        victims = self.eligible(job)
        if not victims:
            self.failed.add(key)
            return False
        self.attempts += 1
        cycle = self.cycle
        start = cycle.plan.savepoint()
        by_node: dict[int, list[Victim]] = {}
        for v in victims:
            for node in {c.node for c in v.claims}:
                by_node.setdefault(node, []).append(v)
        released: list[Victim] = []
        members: list[MemberPlacement] = []
        cycle.ctx.gang_nodes = set()
        for rank in range(job.request.gang):
            got = self._member(job, shape, rank, by_node, released)
            if got is None:
                cycle.plan.rollback(start)
                for v in released:
                    cycle.book.add(v.job.queue, v.job.request, v.models, +1)
                cycle.ctx.gang_nodes = set()
                self.failed.add(key)
                return False
            members.append(got)
        cycle.ctx.gang_nodes = set()
        if not released:  # room appeared without preempting (cannot usually happen)
            cycle.accept(job, members, ())
            return True
        for v in released:
            self.gone.add(v.job.job_id)
            cycle.decision.preemptions.append(Preemption(v.job.job_id, self.reason(v, job), job.job_id))
        cycle.accept(job, members, tuple(v.job.job_id for v in released))
        cycle.released()
        return True

    def _member(self, job, shape, rank, by_node, released) -> MemberPlacement | None:
        """Place one member, preempting on the cheapest node if needed."""
        cycle = self.cycle
        cands = candidates(cycle.ctx, shape)
        if not len(cands):
            best = None
            for node in self._promising(shape, by_node):
                mark = cycle.plan.savepoint()
                freed = []
                for v in by_node[node]:
                    if v.job.job_id in self.gone or v in released:
                        continue
                    if v.kind(job) == "reclaim" and cycle.book.of(v.job.queue).borrowed_milli <= 0:
                        continue
                    self._release(v, -1)
                    freed.append(v)
                    if self._fits_on(shape, node):
                        cost = sum(x.lost_work for x in freed)
                        if best is None or cost < best[0]:
                            best = (cost, node, list(freed))
                        break
                cycle.plan.rollback(mark)
                for v in freed:
                    cycle.book.add(v.job.queue, v.job.request, v.models, +1)
            if best is None:
                return None
            _, node, freed = best
            for v in freed:
                self._release(v, -1)
                released.append(v)
            cands = candidates(cycle.ctx, shape)
            keep = cands.nodes == node
            cands = Candidates(cands.nodes[keep],
                               None if cands.gpus is None else cands.gpus[keep],
                               None if cands.chosen is None else cands.chosen[keep])
            if not len(cands):
                return None
        pick = cycle.profile.pick(cycle.ctx, shape, cands)
        node, grants = grants_of(cycle.state, shape, cands, pick)
        cycle.plan.assume(Claim(node, shape.cpu_milli, shape.memory_mib, grants))
        cycle.ctx.gang_nodes.add(node)
        uuids = cycle.state.uuids[node]
        return MemberPlacement(rank, cycle.state.names[node],
                               tuple(SliceGrant(uuids[j], m, mib) for j, m, mib in grants),
                               shape.cpu_milli, shape.memory_mib)

    def _promising(self, shape: MemberShape, by_node: dict[int, list[Victim]]) -> list[int]:
        """Nodes whose free room plus their victims' room could hold the member, best first."""
        s = self.cycle.state
        out = []
        allowed = allowed_mask(self.cycle.ctx, shape.constraints) if (shape.whole or shape.milli) else None
        for node, vs in by_node.items():
            if not s.node_ok[node] or s.reserved[node]:
                continue
            rooms = [v.room[node] for v in vs]
            cpu = s.cpu_free[node] + sum(r[0] for r in rooms)
            mem = s.mem_free[node] + sum(r[1] for r in rooms)
            if cpu < shape.cpu_milli or mem < shape.memory_mib:
                continue
            room = 0
            if allowed is not None:
                row = allowed[node]
                room = int(s.gpu_free[node][row].sum()) + sum(
                    m for r in rooms for j, m in r[2] if row[j])
                if room < shape.whole * WHOLE + shape.milli:
                    continue
            out.append((min(v.lost_work for v in vs), -room, int(s.rank[node]), node))
        out.sort()
        return [node for *_, node in out[:MAX_NODES]]

    def _fits_on(self, shape: MemberShape, node: int) -> bool:
        s = self.cycle.state
        if s.cpu_free[node] < shape.cpu_milli or s.mem_free[node] < shape.memory_mib:
            return False
        if not (shape.whole or shape.milli):
            return True
        allowed = allowed_mask(self.cycle.ctx, shape.constraints)[node]
        if shape.whole:
            idle = (allowed & (s.gpu_free[node] == WHOLE)
                    & (s.gpu_mem_free[node] == s.acc_mem_cap[node]))
            return int(idle.sum()) >= shape.whole
        mem = (shape.gpu_memory_mib if shape.gpu_memory_mib
               else s.acc_mem_cap[node] * shape.milli // WHOLE)
        return bool((allowed & (s.gpu_free[node] >= shape.milli) & (s.gpu_mem_free[node] >= mem)).any())

    def _release(self, v: Victim, sign: int) -> None:
        for claim in v.claims:
            self.cycle.plan.release(claim)
        self.cycle.book.add(v.job.queue, v.job.request, v.models, sign)

    # ---- words ----------------------------------------------------------------------------------
    def reason(self, v: Victim, job: PendingJob) -> str:
        if v.kind(job) == "reclaim":
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
