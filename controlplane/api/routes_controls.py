"""/api/v1 admin controls: bootstrap tokens, disabling users, scheduler settings, accelerator health."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Depends, Path

from controlplane.api.deps import admin, get_db, get_settings
from controlplane.db.database import Database
from controlplane.loops.runner import dump_cycle
from controlplane.schemas import (AcceleratorHealthChange, AcceleratorOnNode, BootstrapToken,
                                  BootstrapTokenCreate, BootstrapTokenList, SchedulerSettings,
                                  SchedulerSettingsUpdate, TokenRevoked, User, problem_responses)
from controlplane.schemas.base import NAME_PATTERN
from controlplane.schemas.problems import AUTHENTICATED
from controlplane.services import health, identity, nodes
from controlplane.services import scheduler_settings as sched
from controlplane.services.auth import Principal
from controlplane.settings import Settings

router = APIRouter(prefix="/api/v1", tags=["admin"])
USER = Path(pattern=NAME_PATTERN, description="the user's name")
UUID = Path(min_length=1, max_length=128, pattern=r"^[^\x00/]+$", description="the accelerator's UUID")
WRITE = problem_responses(*AUTHENTICATED, 404, 409, 413, 422)


@router.post("/bootstrap-tokens", status_code=201, response_model=BootstrapToken,
             responses=problem_responses(*AUTHENTICATED, 413, 422))
def create_bootstrap_token(body: BootstrapTokenCreate | None = Body(None), who: Principal = Depends(admin),
                           db: Database = Depends(get_db)) -> dict:
    """A token agents register new nodes with (optionally expiring, single use, name-restricted)."""
    return identity.create_bootstrap_token(db, who, body)


@router.get("/bootstrap-tokens", response_model=BootstrapTokenList, responses=problem_responses(*AUTHENTICATED))
def list_bootstrap_tokens(who: Principal = Depends(admin), db: Database = Depends(get_db)) -> dict:
    return identity.list_bootstrap_tokens(db, who)


@router.delete("/bootstrap-tokens/{token_id}", response_model=TokenRevoked,
               responses=problem_responses(*AUTHENTICATED, 404))
def revoke_bootstrap_token(token_id: str, who: Principal = Depends(admin), db: Database = Depends(get_db)) -> dict:
    return identity.revoke_bootstrap_token(db, who, token_id)


@router.post("/users/{name}/disable", response_model=User, responses=WRITE)
def disable_user(name: str = USER, who: Principal = Depends(admin), db: Database = Depends(get_db)) -> dict:
    """The user's tokens are refused and their dashboard sessions end; their jobs keep running."""
    return identity.set_user_disabled(db, who, name, disabled=True)


@router.post("/users/{name}/enable", response_model=User, responses=WRITE)
def enable_user(name: str = USER, who: Principal = Depends(admin), db: Database = Depends(get_db)) -> dict:
    return identity.set_user_disabled(db, who, name, disabled=False)


@router.get("/scheduler", response_model=SchedulerSettings, responses=problem_responses(*AUTHENTICATED))
def get_scheduler(who: Principal = Depends(admin), db: Database = Depends(get_db),
                  settings: Settings = Depends(get_settings)) -> dict:
    return sched.current(db, who, settings.scheduler_policy)


@router.put("/scheduler", response_model=SchedulerSettings, responses=problem_responses(*AUTHENTICATED, 413, 422))
def put_scheduler(body: SchedulerSettingsUpdate, who: Principal = Depends(admin), db: Database = Depends(get_db),
                  settings: Settings = Depends(get_settings)) -> dict:
    """Set the placement policy (and plugin weights); the scheduling loop uses it from its next cycle."""
    return sched.update(db, who, body, settings.scheduler_policy)


@router.get("/scheduler/dump", response_model=dict[str, Any], responses=problem_responses(*AUTHENTICATED))
def scheduler_dump(who: Principal = Depends(admin), db: Database = Depends(get_db),
                   settings: Settings = Depends(get_settings)) -> dict:
    """What the scheduler would decide now, with its whole input: save it and replay it offline
    with `gpupool bench replay FILE` (nothing is applied)."""
    return dump_cycle(db, settings)


@router.delete("/scheduler", response_model=SchedulerSettings, responses=problem_responses(*AUTHENTICATED))
def reset_scheduler(who: Principal = Depends(admin), db: Database = Depends(get_db),
                    settings: Settings = Depends(get_settings)) -> dict:
    """Forget the stored settings: the server's GPUPOOL_SCHEDULER_POLICY applies again."""
    return sched.reset(db, who, settings.scheduler_policy)


def _accelerator(db: Database, uuid: str, node: str) -> dict:
    found = next(a for a in nodes.get_node(db, node)["accelerators"] if a["uuid"] == uuid)
    return {**found, "node": node}


@router.post("/accelerators/{uuid}/mark-healthy", response_model=AcceleratorOnNode, responses=WRITE)
def mark_healthy(uuid: str = UUID, who: Principal = Depends(admin), db: Database = Depends(get_db),
                 settings: Settings = Depends(get_settings)) -> dict:
    """Return a cordoned accelerator to service (and its node, if its health had cordoned it)."""
    node = health.mark_healthy(db, who, uuid, cordon_node_after=settings.unhealthy_gpus_to_cordon_node)
    return _accelerator(db, uuid, node)


@router.post("/accelerators/{uuid}/mark-unhealthy", response_model=AcceleratorOnNode, responses=WRITE)
def mark_unhealthy(body: AcceleratorHealthChange | None = Body(None), uuid: str = UUID,
                   who: Principal = Depends(admin), db: Database = Depends(get_db),
                   settings: Settings = Depends(get_settings)) -> dict:
    """Cordon an accelerator: nothing new is placed on it and its jobs are stopped and requeued."""
    reason = (body or AcceleratorHealthChange()).reason
    node = health.mark_unhealthy(db, who, uuid, reason, cordon_node_after=settings.unhealthy_gpus_to_cordon_node)
    return _accelerator(db, uuid, node)
