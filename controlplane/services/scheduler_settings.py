"""Run-time scheduler settings: the placement policy and plugin weights an admin stored (one row),
validated against the scheduler's own policies, audited, and read by the scheduling loop each
cycle. Without a stored row the server's settings (GPUPOOL_SCHEDULER_POLICY) apply."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete

from controlplane.db.base import now
from controlplane.db.database import Database
from controlplane.db.models import SchedulerSettingsRow
from controlplane.scheduler.policies import DEFAULT_POLICY, POLICIES, profile
from controlplane.schemas import SchedulerSettingsUpdate
from controlplane.services import events
from controlplane.services.admin import validated
from controlplane.services.errors import Invalid
from controlplane.services.principal import Principal, require_admin
from controlplane.services.serialize import iso

ROW_ID = 1
PLUGINS = sorted({plugin for weights in POLICIES.values() for plugin in weights})


@dataclass(frozen=True, slots=True)
class StoredPolicy:
    policy: str
    weights: dict[str, float] | None
    updated_at: float


def stored(db: Database) -> StoredPolicy | None:
    """The admin's settings, or None (one primary-key read: cheap enough for every cycle)."""
    with db.read() as s:
        row = s.get(SchedulerSettingsRow, ROW_ID)
        return StoredPolicy(row.policy, dict(row.weights) if row.weights is not None else None,
                            row.updated_at) if row is not None else None


def check(policy: str, weights: dict[str, float] | None) -> None:
    """A 422 naming the unknown policy or plugin (the scheduler's own check)."""
    try:
        profile(policy, weights)
    except ValueError as err:
        raise Invalid("weights" if weights is not None else "policy", str(err)) from None


def _effective(policy: str, weights: dict[str, float] | None) -> dict[str, float]:
    return dict(weights) if weights is not None else dict(POLICIES.get(policy, {}))


def current(db: Database, who: Principal, default_policy: str | None) -> dict:
    require_admin(who)
    with db.read() as s:
        row = s.get(SchedulerSettingsRow, ROW_ID)
        if row is None:
            policy = default_policy or DEFAULT_POLICY
            out = {"policy": policy, "weights": None, "source": "settings", "updated_at": None,
                   "updated_by": None}
        else:
            out = {"policy": row.policy, "weights": row.weights, "source": "admin",
                   "updated_at": iso(row.updated_at), "updated_by": row.updated_by}
    return {**out, "effective_weights": _effective(out["policy"], out["weights"]),
            "policies": {k: dict(v) for k, v in POLICIES.items()}, "plugins": PLUGINS}


def update(db: Database, who: Principal, body: SchedulerSettingsUpdate | dict,
           default_policy: str | None) -> dict:
    """Store the policy (and weights); the scheduling loop uses them from its next cycle."""
    require_admin(who)
    req = validated(SchedulerSettingsUpdate, body)
    check(req.policy, req.weights)
    with db.tx() as s:
        row = s.get(SchedulerSettingsRow, ROW_ID, with_for_update=True)
        before = {"policy": row.policy, "weights": row.weights} if row is not None else None
        if row is None:
            row = SchedulerSettingsRow(id=ROW_ID)
            s.add(row)
        row.policy, row.weights, row.updated_at, row.updated_by = req.policy, req.weights, now(), who.actor
        events.record(s, "scheduler_settings_updated", "scheduler", "settings", who.actor,
                      reason=f"policy {req.policy}" + (" with explicit weights" if req.weights is not None else ""),
                      data={"policy": req.policy, "weights": req.weights, "before": before})
    return current(db, who, default_policy)


def reset(db: Database, who: Principal, default_policy: str | None) -> dict:
    """Forget the admin's settings: the server's settings apply again from the next cycle."""
    require_admin(who)
    with db.tx() as s:
        if s.execute(delete(SchedulerSettingsRow).where(SchedulerSettingsRow.id == ROW_ID)).rowcount:
            events.record(s, "scheduler_settings_reset", "scheduler", "settings", who.actor,
                          reason="back to the server's settings")
    return current(db, who, default_policy)
