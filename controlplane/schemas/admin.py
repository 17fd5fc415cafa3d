"""Teams, queues (quotas), users, tokens and whoami: request bodies and answers."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, ValidationInfo, field_validator

from controlplane.core.bounds import INT32_MAX, NO_NUL, text
from controlplane.core.states import Role
from controlplane.schemas.base import ApiModel, Name, Timestamp, WriteModel

Milli = Annotated[int, Field(ge=0, le=INT32_MAX, strict=True,
                             description="compute in milli (1000 = one accelerator)")]
Weight = Annotated[float, Field(gt=0, le=1_000_000, strict=True, description="fair-share weight")]
UserRole = Literal["admin", "member"]
MiB = Annotated[int, Field(ge=0, le=2**40, strict=True, description="GPU memory in MiB")]
Priority = Annotated[int, Field(ge=-1_000_000, le=1_000_000, strict=True,
                                description="a job priority (low -100, normal 0, high 100, critical 1000)")]
Seconds = Annotated[float, Field(ge=0, le=10 * 365 * 86400, description="seconds")]
PendingCap = Annotated[int, Field(ge=0, le=INT32_MAX, strict=True, description="pending jobs")]
ModelName = Annotated[str, Field(min_length=1, max_length=64, pattern=NO_NUL)]
ModelGuarantees = Annotated[dict[ModelName, Milli], Field(max_length=64, description=(
    "compute milli guaranteed per GPU model, e.g. {\"H100-80GB\": 4000}: a job pinned to that model "
    "counts as within guarantee while the queue's use of the model stays below it"))]


class QueuePolicyFields(WriteModel):
    """What members' jobs in the queue may ask for (admins may exceed it) and its quotas beyond
    compute: null means no limit (no guarantee for the memory guarantee)."""

    max_priority: Priority | None = Field(None, description="highest priority for members; null: any")
    allow_non_preemptible: bool = Field(True, description="may members submit preemptible: false")
    max_min_runtime_s: Seconds | None = Field(None, description="longest min_runtime_s for members; null: any")
    max_pending_jobs: PendingCap | None = Field(None, description="pending jobs the queue may hold; "
                                                                 "null: the server's default cap")
    model_guarantees_milli: ModelGuarantees | None = None
    memory_guarantee_mib: MiB | None = Field(None, description="GPU memory guaranteed; null: none")
    memory_limit_mib: MiB | None = Field(None, description="GPU memory the queue may hold; null: no limit")

    @field_validator("memory_limit_mib")
    @classmethod
    def _memory_not_below_guarantee(cls, v: int | None, info: ValidationInfo) -> int | None:
        guarantee = info.data.get("memory_guarantee_mib")
        if v is not None and guarantee is not None and v < guarantee:
            raise ValueError("must not be below memory_guarantee_mib")
        return v


class Health(ApiModel):
    status: str


class Whoami(ApiModel):
    user: str | None = None
    team: str | None = None
    role: Role
    node: str | None = None


class TeamCreate(WriteModel):
    name: Name


class Team(ApiModel):
    id: str
    name: str
    created_at: Timestamp


class TeamList(ApiModel):
    items: list[Team]


class QueueCreate(QueuePolicyFields):
    name: Name
    team: Name
    guarantee_milli: Milli = 0
    limit_milli: Milli | None = Field(None, description="null: no limit")
    weight: Weight = 1.0

    @field_validator("limit_milli")
    @classmethod
    def _not_below_guarantee(cls, v: int | None, info: ValidationInfo) -> int | None:
        guarantee = info.data.get("guarantee_milli")
        if v is not None and guarantee is not None and v < guarantee:
            raise ValueError("must not be below guarantee_milli")
        return v


class QueueUpdate(QueuePolicyFields):
    """Fields left out keep their value; null removes a limit (``limit_milli``, ``max_priority``...)."""

    name: Name | None = Field(None, description="the queue's name (a queue cannot be renamed)")
    team: Name | None = Field(None, description="the queue's team, when the name is in several")
    # left out: unchanged (the defaults below are never sent); null is allowed for the limit only
    guarantee_milli: Milli = None  # type: ignore[assignment]
    limit_milli: Milli | None = None
    weight: Weight = None  # type: ignore[assignment]
    allow_non_preemptible: bool = None  # type: ignore[assignment]

    def changes(self) -> dict:
        """The quota fields the caller set."""
        return self.model_dump(include=self.model_fields_set - {"name", "team"})


class Queue(ApiModel):
    name: str
    team: str
    guarantee_milli: int
    limit_milli: int | None = None
    weight: float
    allocated_milli: int
    pending_jobs: int
    running_jobs: int
    max_priority: int | None = None
    allow_non_preemptible: bool = True
    max_min_runtime_s: float | None = None
    max_pending_jobs: int | None = None
    model_guarantees_milli: dict[str, int] = {}
    memory_guarantee_mib: int | None = None
    memory_limit_mib: int | None = None
    allocated_memory_mib: int = 0


class QueueList(ApiModel):
    items: list[Queue]


class UserCreate(WriteModel):
    name: Name
    team: Name
    role: UserRole = "member"


class User(ApiModel):
    id: str
    name: str
    team: str
    role: UserRole
    created_at: Timestamp
    disabled: bool = False


class UserList(ApiModel):
    items: list[User]


MAX_TOKEN_LIFETIME_S = 10 * 365 * 86400


class TokenCreate(WriteModel):
    user: Name
    name: Annotated[str, text(128)] = Field("", description="a label for the token")
    expires_in_s: float | None = Field(None, gt=0, le=MAX_TOKEN_LIFETIME_S, strict=True,
                                       description="seconds until the token expires (at most ten years); "
                                                   "leave out for a token that never expires")


class TokenCreated(ApiModel):
    """The secret is shown once; only its hash is stored."""

    id: str
    token: str
    user: str
    name: str
    expires_at: Timestamp | None = None


class Token(ApiModel):
    id: str
    kind: Literal["user", "node", "bootstrap"]
    name: str
    user: str | None = None
    node_id: str | None = None
    created_at: Timestamp
    expires_at: Timestamp | None = None
    single_use: bool = False
    name_pattern: str | None = None
    used_at: Timestamp | None = None


class TokenList(ApiModel):
    items: list[Token]


class TokenRevoked(ApiModel):
    id: str
    revoked: bool
