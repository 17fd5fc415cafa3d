"""Who is calling (a user, a node's agent or a bootstrap token) and the role checks on it."""

from __future__ import annotations

from dataclasses import dataclass

from controlplane.core.states import Role
from controlplane.services.errors import Forbidden


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a user (admin or member of a team), a node's agent, or a bootstrap token."""

    role: Role
    token_id: int
    user_id: int | None = None
    user: str | None = None
    team_id: int | None = None
    team: str | None = None
    node_id: int | None = None
    node: str | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == Role.ADMIN

    @property
    def actor(self) -> str:
        if self.user:
            return f"user:{self.user}"
        if self.node:
            return f"node:{self.node}"
        return f"token:{self.token_id}"


def require_user(who: Principal) -> Principal:
    if who.role not in (Role.ADMIN, Role.MEMBER):
        raise Forbidden(f"a {who.role.value} token may not call this endpoint; use a user token")
    return who


def require_admin(who: Principal) -> Principal:
    if who.role != Role.ADMIN:
        raise Forbidden("only admins may do this")
    return who


def require_agent(who: Principal) -> Principal:
    if who.role != Role.AGENT:
        raise Forbidden("only a node agent token may call this endpoint")
    return who
