"""Members onto the Plan: pick the best spot, claim it, and build the member's placement.

The one way a member is placed, shared by the cycle, preemption and reservations.
"""

from __future__ import annotations

from collections.abc import Sequence

from controlplane.core.resources import SliceGrant
from controlplane.core.snapshot import MemberPlacement
from controlplane.scheduler.framework import Candidates, MemberShape, Plan, Profile
from controlplane.scheduler.plugins.fit import candidates, grants_of
from controlplane.scheduler.state import Claim, ClusterState


def assume_member(plan: Plan, profile: Profile, shape: MemberShape, rank: int,
                  cands: Candidates) -> MemberPlacement:
    """Claim the best of ``cands`` (not empty) for gang member ``rank``."""
    state = plan.state
    node, grants = grants_of(state, shape, cands, profile.pick(plan.ctx, shape, cands))
    plan.assume(Claim(node, shape.cpu_milli, shape.memory_mib, grants))
    plan.join_gang(node)
    uuids = state.uuids[node]
    return MemberPlacement(rank, state.names[node],
                           tuple(SliceGrant(uuids[j], milli, mib) for j, milli, mib in grants),
                           shape.cpu_milli, shape.memory_mib)


def place_gang(plan: Plan, profile: Profile, shape: MemberShape,
               gang: int) -> tuple[list[MemberPlacement] | None, int]:
    """Assume all ``gang`` members, or none: on failure the plan is rolled back and the answer
    says how many fitted."""
    start = plan.savepoint()
    members: list[MemberPlacement] = []
    for rank in range(gang):
        cands = candidates(plan.ctx, shape)
        if not len(cands):
            plan.rollback(start)
            return None, rank
        members.append(assume_member(plan, profile, shape, rank, cands))
    return members, gang


def claims_of(state: ClusterState, members: Sequence[MemberPlacement]) -> list[Claim] | None:
    """The claims placed members hold on the state (None if a node or GPU is unknown)."""
    claims = []
    for member in members:
        node = state.index.get(member.node)
        if node is None:
            return None
        grants = []
        for grant in member.slices:
            at = state.where.get(grant.accelerator_uuid)
            if at is None or at[0] != node:
                return None
            grants.append((at[1], grant.compute_milli, grant.memory_mib))
        claims.append(Claim(node, member.cpu_milli, member.memory_mib, tuple(grants)))
    return claims
