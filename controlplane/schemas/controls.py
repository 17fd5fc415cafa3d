"""Admin controls: bootstrap tokens for agents, run-time scheduler settings, accelerator health."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, field_validator

from controlplane.core.bounds import text
from controlplane.schemas.admin import MAX_TOKEN_LIFETIME_S
from controlplane.schemas.base import ApiModel, Timestamp, WriteModel

PluginWeight = Annotated[float, Field(ge=0, le=1_000_000, allow_inf_nan=False,
                                      description="a score plugin's weight")]


class BootstrapTokenCreate(WriteModel):
    """A token agents register new nodes with; every restriction is optional."""

    name: Annotated[str, text(128)] = Field("agent bootstrap", description="a label for the token")
    expires_in_s: float | None = Field(None, gt=0, le=MAX_TOKEN_LIFETIME_S, description=(
        "seconds until it expires; leave out for a token that never expires"))
    single_use: bool = Field(False, description="the first node registered with it uses it up")
    name_pattern: Annotated[str, text(253)] | None = Field(None, description=(
        "a regular expression every node name registered with it must match in full, e.g. gpu-[0-9]+"))

    @field_validator("name_pattern")
    @classmethod
    def _compiles(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except re.error as err:
                raise ValueError(f"not a regular expression: {err}") from None
        return v


class BootstrapToken(ApiModel):
    """A new bootstrap token: the secret is shown once; only its hash is stored."""

    id: str
    token: str
    name: str = "agent bootstrap"
    expires_at: Timestamp | None = None
    single_use: bool = False
    name_pattern: str | None = None


class BootstrapTokenInfo(ApiModel):
    id: str
    name: str
    created_at: Timestamp
    expires_at: Timestamp | None = None
    single_use: bool
    name_pattern: str | None = None
    used_at: Timestamp | None = None
    state: Literal["active", "used", "expired", "revoked"]


class BootstrapTokenList(ApiModel):
    items: list[BootstrapTokenInfo]


class SchedulerSettingsUpdate(WriteModel):
    """The placement policy by name, and optionally explicit plugin weights that replace its own."""

    policy: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
    weights: Annotated[dict[Annotated[str, Field(max_length=64)], PluginWeight],
                       Field(max_length=32)] | None = Field(None, description=(
                           "plugin -> weight; leave out (or null) for the policy's own weights"))


class SchedulerSettings(ApiModel):
    """What the scheduling loop uses now (it reads stored settings once per cycle)."""

    policy: str
    weights: dict[str, float] | None = None  # the admin's explicit weights, if any
    effective_weights: dict[str, float]
    source: Literal["settings", "admin"]  # server settings (GPUPOOL_SCHEDULER_POLICY) or an admin
    updated_at: Timestamp | None = None
    updated_by: str | None = None
    policies: dict[str, dict[str, float]]  # the known policies and their weights
    plugins: list[str]


class AcceleratorHealthChange(WriteModel):
    """Why an admin marks an accelerator unhealthy (shown on the node and in events)."""

    reason: Annotated[str, text(500)] = "marked unhealthy by an admin"
