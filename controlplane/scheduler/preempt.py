"""Preemption and reclaim: free room for a job by stopping the work that loses the least.

Victims are running, preemptible jobs past their minimum runtime that either have a lower
priority in the job's own queue, or belong to a queue borrowing beyond its guarantee while
the job's queue is within its own guarantee (reclaim). For each member the engine looks at
the nodes where victims run, frees the cheapest victims there (least work lost = runtime x
GPU) until the member fits, and keeps the node where that costs least. A gang is all or
nothing: every release, quota change and placement is on the Plan, rolled back together.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from controlplane.core.snapshot import MemberPlacement, PendingJob, PendingReason, RunningJob
from controlplane.scheduler.framework import MemberShape, Plan, Profile
from controlplane.scheduler.place import assume_member, claims_of
from controlplane.scheduler.plugins.fit import candidates, fits_on
from controlplane.scheduler.queues import Held, QuotaBook, gpus
from controlplane.scheduler.state import Claim

MAX_NODES = 16  # nodes examined per member (the most promising by victims' room)
MAX_VICTIMS = 512  # victims considered per attempt (least work lost first)
SPARED_SHOWN = 3  # protected victims named in a pending reason


@dataclass(slots=True, eq=False)
class Victim:
    """A running job that may be preempted, with the room it would free as flat arrays."""

    job: RunningJob
    claims: list[Claim]
    held: Held
    lost_work: float
    hosts: list[tuple[int, int, int]]  # per claim: node, CPU milli, memory MiB
    grants: list[tuple[int, int, int]]  # per granted accelerator: node, index, milli
    on: tuple[int, ...]  # its nodes

    def kind(self, job: PendingJob) -> str:
        return "priority" if self.job.queue == job.queue else "reclaim"


@dataclass(slots=True)
class Preempted:
    """A job placed by stopping ``victims`` first."""

    members: list[MemberPlacement]
    victims: list[Victim]


class Preemptor:
    """Finds and frees victims on the cycle's Plan (which also carries the quota book)."""

    def __init__(self, plan: Plan, book: QuotaBook, profile: Profile,
                 running: Sequence[RunningJob], now: float, max_attempts: int):
        self.plan, self.book, self.profile = plan, book, profile
        self.now = now
        self.max_attempts = max_attempts
        self.by_queue: dict[str, list[tuple[float, str, RunningJob]]] = {}
        self.spared: dict[str, list[tuple[str, int]]] = {}  # queue -> (why, priority)
        for r in running:
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
        self.eligible_cache: dict[tuple, tuple[list[Victim], list[str]]] = {}
        self.attempts = 0
        self.failed: set[tuple] = set()
        self.protected: dict[str, list[str]] = {}  # job id -> why some victims were spared

    # ---- who may be preempted -----------------------------------------------------------------
    def victim(self, r: RunningJob) -> Victim | None:
        if r.job_id not in self.cache:
            self.cache[r.job_id] = self._victim(r)
        return self.cache[r.job_id]

    def _victim(self, r: RunningJob) -> Victim | None:
        claims = claims_of(self.plan.state, r.members)
        if claims is None:
            return None
        return Victim(r, claims, self.book.held(r.members),
                      (self.now - r.started_at) * r.request.total_gpu_milli,
                      [(c.node, c.cpu_milli, c.memory_mib) for c in claims],
                      [(c.node, j, m) for c in claims for j, m, _ in c.gpus],
                      tuple(sorted({c.node for c in claims})))

    def eligible(self, job: PendingJob) -> list[Victim]:
        """Up to MAX_VICTIMS victims, least work lost first."""
        book = self.book
        borrowers = tuple(sorted(q for q in self.by_queue.keys() | self.spared.keys()
                                 if q != job.queue and book.of(q).borrowing
                                 )) if book.within_guarantee(job) else ()
        key = (job.queue, job.priority, borrowers, len(self.gone))
        if key not in self.eligible_cache:  # jobs alike in queue and priority share victims
            streams = [[t for t in self.by_queue.get(job.queue, []) if t[2].priority < job.priority]]
            streams += [self.by_queue.get(q, []) for q in borrowers]
            spared = [why for why, prio in self.spared.get(job.queue, []) if prio < job.priority]
            spared += [why for q in borrowers for why, _ in self.spared.get(q, [])]
            out = []
            for _, job_id, r in heapq.merge(*streams, key=lambda t: (t[0], t[1])):
                v = None if job_id in self.gone else self.victim(r)
                if v is not None:
                    out.append(v)
                    if len(out) >= MAX_VICTIMS:
                        break
            self.eligible_cache[key] = (out, spared)
        out, spared = self.eligible_cache[key]
        self.protected[job.job_id] = spared
        return out

    # ---- the action -----------------------------------------------------------------------------
    def try_preempt(self, job: PendingJob, shape: MemberShape) -> Preempted | None:
        """Place ``job`` by preempting, on the plan; None (plan unchanged) when it cannot."""
        key = (shape, job.request.gang, job.queue, job.priority)
        if key in self.failed or self.attempts >= self.max_attempts:
            return None
        victims = self.eligible(job)
        if not victims:
            self.failed.add(key)
            return None
        self.attempts += 1
        start = self.plan.savepoint()
        by_node: dict[int, list[Victim]] = {}
        for v in victims:
            for node in v.on:
                by_node.setdefault(node, []).append(v)
        released: list[Victim] = []
        members: list[MemberPlacement] = []
        for rank in range(job.request.gang):
            got = self._member(job, shape, rank, victims, by_node, released)
            if got is None:
                self.plan.rollback(start)
                self.failed.add(key)
                return None
            members.append(got)
        self.gone.update(v.job.job_id for v in released)
        return Preempted(members, released)

    def _member(self, job: PendingJob, shape: MemberShape, rank: int, victims: list[Victim],
                by_node: dict[int, list[Victim]], released: list[Victim]) -> MemberPlacement | None:
        """Place one member, preempting on the cheapest node if needed."""
        plan = self.plan
        cands = candidates(plan.ctx, shape)
        if not len(cands):
            best = None
            state, allowed = plan.state, plan.ctx.allowed(shape.constraints)
            for node, cheapest in self._promising(shape, [v for v in victims if v not in released]):
                if best is not None and cheapest >= max(best[0], 0.0):
                    break  # nodes come cheapest victim first: none further can cost less
                mark = plan.savepoint()
                freed = []
                cpu, mem = int(state.cpu_free[node]), int(state.mem_free[node])
                gpu = int(state.gpu_free[node][allowed[node]].sum()) if shape.uses_gpu else 0
                for v in by_node[node]:
                    if v.job.job_id in self.gone or v in released:
                        continue
                    if v.kind(job) == "reclaim" and not self.book.of(v.job.queue).borrowing:
                        continue
                    self._release(v)
                    freed.append(v)
                    cpu += sum(c for n, c, _ in v.hosts if n == node)
                    mem += sum(m for n, _, m in v.hosts if n == node)
                    gpu += sum(m for n, j, m in v.grants if n == node and allowed[node, j])
                    if cpu < shape.cpu_milli or mem < shape.memory_mib or gpu < shape.gpu_milli_total:
                        continue  # not enough freed yet for it to fit: no need to ask
                    if fits_on(plan.ctx, shape, node):
                        cost = sum(x.lost_work for x in freed)
                        if best is None or cost < best[0]:
                            best = (cost, node, list(freed))
                        break
                plan.rollback(mark)
            if best is None:
                return None
            _, node, freed = best
            for v in freed:
                self._release(v)
                released.append(v)
            cands = candidates(plan.ctx, shape)
            cands = cands.take(cands.nodes == node)
            if not len(cands):
                return None
        return assume_member(plan, self.profile, shape, rank, cands)

    def _promising(self, shape: MemberShape, victims: list[Victim]) -> list[tuple[int, float]]:
        """(node, loss of its cheapest victim) for the nodes whose free room plus their victims'
        room could hold the member, best first (least work lost by their cheapest victim, then
        most GPU room, then node rank)."""
        if not victims:
            return []
        s = self.plan.state
        hosts = np.array([h for v in victims for h in v.hosts], np.int64)
        nodes = hosts[:, 0]
        lost = np.array([v.lost_work for v in victims for _ in v.hosts])
        cpu = np.bincount(nodes, hosts[:, 1], s.n) + s.cpu_free
        mem = np.bincount(nodes, hosts[:, 2], s.n) + s.mem_free
        order = np.argsort(lost, kind="stable")
        seen, first = np.unique(nodes[order], return_index=True)
        cheapest = lost[order][first]  # per node with victims: its cheapest victim's loss
        ok = s.usable(shape.ends_at, seen) & (cpu[seen] >= shape.cpu_milli) & (mem[seen] >= shape.memory_mib)
        room = np.zeros(len(seen))
        if shape.uses_gpu:
            allowed = self.plan.ctx.allowed(shape.constraints)
            grants = np.array([g for v in victims for g in v.grants], np.int64).reshape(-1, 3)
            freed = np.bincount(grants[:, 0], grants[:, 2] * allowed[grants[:, 0], grants[:, 1]], s.n)
            room = (np.where(allowed[seen], s.gpu_free[seen], 0).sum(axis=1) + freed[seen])
            ok &= room >= shape.gpu_milli_total
        seen, cheapest, room = seen[ok], cheapest[ok], room[ok]
        best = np.lexsort((seen, s.rank[seen], -room, cheapest))[:MAX_NODES]
        return [(int(node), float(loss)) for node, loss in zip(seen[best], cheapest[best])]

    def _release(self, v: Victim) -> None:
        for claim in v.claims:
            self.plan.release(claim)
        self.plan.charge(v.job.queue, v.job.request, v.held, -1)

    # ---- words ----------------------------------------------------------------------------------
    def reason(self, v: Victim, job: PendingJob) -> str:
        if v.kind(job) == "reclaim":
            q = self.book.of(job.queue).queue
            return (f"preempted: reclaimed by queue {q.name} (guarantee "
                    f"{gpus(q.guarantee_milli)} GPU) for job {job.job_id}; queue {v.job.queue} "
                    "was using more than its guarantee")
        return (f"preempted: job {job.job_id} (priority {job.priority}) in queue {job.queue} "
                f"outranks it (priority {v.job.priority})")

    def annotate(self, job: PendingJob, reason: PendingReason) -> PendingReason:
        spared = self.protected.get(job.job_id)
        if not spared:
            return reason
        return reason.with_note("not preempting " + "; ".join(spared[:SPARED_SHOWN]),
                                protected_by_min_runtime=len(spared))
