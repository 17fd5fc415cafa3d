"""First-fit placement: the simplest correct policy (placeholder for the policy engine)."""

from __future__ import annotations

import copy
from dataclasses import dataclass

from controlplane.core.resources import WHOLE, Accelerator, Node, Request, SliceGrant
from controlplane.core.snapshot import Decision, MemberPlacement, PendingReason, Placement, Snapshot


@dataclass(frozen=True)
class SchedulerConfig:
    policy: str = "firstfit"


def _fit_member(node: Node, req: Request) -> tuple[SliceGrant, ...] | None:
    if node.cordoned or not node.ready:
        return None
    if node.free_cpu_milli < req.cpu_milli or node.free_memory_mib < req.memory_mib:
        return None
    usable = [a for a in node.accelerators if a.healthy and req.constraints.allows(a, node.labels)]
    if req.gpus:
        idle = [a for a in usable if a.is_idle and a.unmanaged_memory_mib == 0]
        if len(idle) < req.gpus:
            return None
        return tuple(SliceGrant(a.uuid, WHOLE, a.memory_mib) for a in idle[: req.gpus])
    if req.is_fractional:
        for acc in usable:
            mem = req.slice_memory_mib(acc)
            if acc.free_milli >= req.gpu_milli and acc.free_memory_mib >= mem:
                return (SliceGrant(acc.uuid, req.gpu_milli, mem),)
        return None
    return ()


def _take(node: Node, req: Request, grants: tuple[SliceGrant, ...]) -> None:
    node.allocated_cpu_milli += req.cpu_milli
    node.allocated_memory_mib += req.memory_mib
    by_uuid: dict[str, Accelerator] = {a.uuid: a for a in node.accelerators}
    for g in grants:
        by_uuid[g.accelerator_uuid].allocated_milli += g.compute_milli
        by_uuid[g.accelerator_uuid].allocated_memory_mib += g.memory_mib


def schedule(snapshot: Snapshot, config: SchedulerConfig | None = None) -> Decision:
    """Place pending jobs in priority then submission order on the first node that fits."""
    nodes = copy.deepcopy(snapshot.nodes)
    decision = Decision()
    for job in sorted(snapshot.pending, key=lambda j: (-j.priority, j.submitted_seq)):
        members: list[MemberPlacement] = []
        trial = copy.deepcopy(nodes)
        for rank in range(job.request.gang):
            for node in trial:
                grants = _fit_member(node, job.request)
                if grants is not None:
                    _take(node, job.request, grants)
                    members.append(MemberPlacement(rank, node.name, grants,
                                                   job.request.cpu_milli, job.request.memory_mib))
                    break
            else:
                break
        if len(members) == job.request.gang:
            nodes = trial
            decision.placements.append(Placement(job.job_id, tuple(members)))
        else:
            decision.pending[job.job_id] = PendingReason(
                "capacity", f"no node has room for member {len(members)} of {job.request.gang}",
            )
    return decision
