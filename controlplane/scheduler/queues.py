"""Queue accounting: usage against guarantee and limit, and weighted DRF order between queues.

Usage is GPU compute milli (the quota unit), also kept per accelerator model for model
guarantees and as GPU memory (MiB) for memory guarantees and limits, plus CPU and host memory for
the dominant-resource share. A queue above its compute guarantee, or above its GPU-memory
guarantee, is *borrowing*; its newest jobs are the ones a reclaim may take back.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from controlplane.core.resources import WHOLE, Request
from controlplane.core.snapshot import MemberPlacement, PendingJob, Queue, Snapshot


MIN_WEIGHT = 1e-9  # a queue of weight 0 still gets an order (last), never a division by zero


def gpus(milli: int) -> str:
    """Milli as a short GPU count for messages: 7500 -> '7.5'."""
    return f"{milli / WHOLE:.2f}".rstrip("0").rstrip(".")


@dataclass(frozen=True, slots=True)
class Held:
    """What a placed job holds that quotas count beyond its request: GPU milli per accelerator
    model (only tracked when a queue has model guarantees) and GPU memory (MiB)."""

    models: dict[str, int]
    gpu_memory_mib: int = 0


@dataclass(slots=True)
class QueueUsage:
    queue: Queue
    gpu_milli: int = 0
    cpu_milli: int = 0
    memory_mib: int = 0
    gpu_memory_mib: int = 0
    by_model: dict[str, int] = field(default_factory=dict)
    turn: tuple[int, float] | None = None  # cached turn key; cleared when usage changes

    @property
    def borrowed_milli(self) -> int:
        return max(0, self.gpu_milli - self.queue.guarantee_milli)

    @property
    def borrowing(self) -> bool:
        """Above its compute guarantee, or above its GPU-memory guarantee where it has one."""
        memory = self.queue.memory_guarantee_mib
        return self.borrowed_milli > 0 or (memory is not None and self.gpu_memory_mib > memory)

    def model_guarantee(self, model: str) -> int | None:
        for name, milli in self.queue.model_guarantees_milli:
            if name == model:
                return milli
        return None


class QuotaBook:
    """Usage of every queue, updated as the cycle places and preempts jobs."""

    def __init__(self, snapshot: Snapshot):
        self.usage = {q.name: QueueUsage(q) for q in snapshot.queues}
        # usage per model only matters to per-model guarantees
        self.tracks_models = any(q.model_guarantees_milli for q in snapshot.queues)
        self.model_of = ({a.uuid: a.model for n in snapshot.nodes for a in n.accelerators}
                         if self.tracks_models else {})  # accelerator uuid -> model
        self.releases = 0  # bumped when usage drops (a preemption): turn order must be rebuilt
        total_gpu = sum(len(n.accelerators) for n in snapshot.nodes) * WHOLE
        self.totals = (max(total_gpu, 1), max(sum(n.cpu_milli for n in snapshot.nodes), 1),
                       max(sum(n.memory_mib for n in snapshot.nodes), 1))
        for job in snapshot.running:
            self.add(job.queue, job.request, self.held(job.members))

    def of(self, queue: str) -> QueueUsage:
        if queue not in self.usage:  # a job in an unknown queue: no guarantee, no limit
            self.usage[queue] = QueueUsage(Queue(queue, team=queue))
        return self.usage[queue]

    def held(self, members: Sequence[MemberPlacement]) -> Held:
        """What ``members`` hold: GPU milli per model (empty without model guarantees), GPU memory."""
        models: dict[str, int] = {}
        memory = 0
        for member in members:
            for grant in member.slices:
                memory += grant.memory_mib
                if self.tracks_models:
                    model = self.model_of.get(grant.accelerator_uuid, "")
                    models[model] = models.get(model, 0) + grant.compute_milli
        return Held(models, memory)

    def add(self, queue: str, req: Request, held: Held, sign: int = 1) -> None:
        u = self.of(queue)
        u.turn = None
        if sign < 0:
            self.releases += 1
        u.gpu_milli += sign * req.total_gpu_milli
        u.cpu_milli += sign * req.cpu_milli * req.gang
        u.memory_mib += sign * req.memory_mib * req.gang
        u.gpu_memory_mib += sign * held.gpu_memory_mib
        for model, milli in held.models.items():
            u.by_model[model] = u.by_model.get(model, 0) + sign * milli

    def dominant_share(self, queue: str) -> float:
        u = self.of(queue)
        gpu, cpu, mem = self.totals
        share = max(u.gpu_milli / gpu, u.cpu_milli / cpu, u.memory_mib / mem)
        return share / max(u.queue.weight, MIN_WEIGHT)

    def turn_key(self, queue: str) -> tuple[int, float]:
        """Queues still below their guarantee go first (so the cycle never hands their room to
        a borrower it would reclaim next cycle), then the lowest weighted dominant share."""
        u = self.of(queue)
        if u.turn is None:
            u.turn = (0 if u.gpu_milli < u.queue.guarantee_milli else 1, self.dominant_share(queue))
        return u.turn

    def over_limit(self, job: PendingJob) -> str | None:
        """A readable quota message when placing ``job`` would pass its queue's limit."""
        u = self.of(job.queue)
        limit = u.queue.limit_milli
        if limit is None or u.gpu_milli + job.request.total_gpu_milli <= limit:
            return None
        q = u.queue
        return (f"quota: {q.team} uses {gpus(u.gpu_milli)} of its {gpus(q.guarantee_milli)} GPU "
                f"guarantee and its limit is {gpus(limit)}; this job needs "
                f"{gpus(job.request.total_gpu_milli)} more")

    def over_memory_limit(self, queue: str, held: Held) -> str | None:
        """A readable quota message when holding ``held`` more would pass the queue's GPU-memory
        limit (checked once the placement, and so its memory, is known)."""
        u = self.of(queue)
        limit = u.queue.memory_limit_mib
        if limit is None or u.gpu_memory_mib + held.gpu_memory_mib <= limit:
            return None
        return (f"quota: {u.queue.team} holds {u.gpu_memory_mib / 1024:.0f} GiB of GPU memory and its "
                f"limit is {limit / 1024:.0f} GiB; this job needs {held.gpu_memory_mib / 1024:.0f} GiB more")

    def within_guarantee(self, job: PendingJob) -> bool:
        """True when placing ``job`` keeps its queue within its guarantee: the total one, or
        (for a job pinned to models) a per-model guarantee of one of those models."""
        u = self.of(job.queue)
        need = job.request.total_gpu_milli
        memory = u.queue.memory_guarantee_mib
        if memory is not None and u.gpu_memory_mib + job.request.gpu_memory_mib * job.request.gang > memory:
            return False  # past its GPU-memory guarantee (a fraction's memory is known up front)
        if u.gpu_milli + need <= u.queue.guarantee_milli:
            return True
        for model in job.request.constraints.models:
            guarantee = u.model_guarantee(model)
            if guarantee is not None and u.by_model.get(model, 0) + need <= guarantee:
                return True
        return False


def job_order(job: PendingJob) -> tuple[int, int, str]:
    """Within a queue: higher priority first, then older."""
    return (-job.priority, job.submitted_seq, job.job_id)


def fair_order(pending: list[PendingJob], book: QuotaBook) -> Iterator[PendingJob]:
    """Jobs one at a time: queues below their guarantee first, then the lowest weighted
    dominant share.

    The caller updates ``book`` after each placement, so the order follows the cycle's
    own decisions (weighted DRF). Ties: queue name.
    """
    per_queue: dict[str, list[PendingJob]] = {}
    for job in pending:
        per_queue.setdefault(job.queue, []).append(job)
    for jobs in per_queue.values():
        jobs.sort(key=job_order, reverse=True)  # pop() from the end = next job
    heap = [(book.turn_key(q), q) for q in per_queue]
    heapq.heapify(heap)
    seen = book.releases
    while heap:
        if book.releases != seen:  # some queue's usage dropped: its stored key is stale
            seen = book.releases
            heap = [(book.turn_key(q), q) for _, q in heap]
            heapq.heapify(heap)
        key, queue = heapq.heappop(heap)
        current = book.turn_key(queue)
        if current != key:  # usage changed since pushed (a preemption): re-queue with the new key
            heapq.heappush(heap, (current, queue))
            continue
        jobs = per_queue[queue]
        yield jobs.pop()
        if jobs:
            heapq.heappush(heap, (book.turn_key(queue), queue))
