"""/api/v1/agent: the node agent protocol (controlplane/core/wire.py)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request
from controlplane.api.deps import agent, get_db, get_settings, principal
from controlplane.api.epochs import EpochWatcher
from controlplane.api.workpools import run_agent_work
from controlplane.core import wire
from controlplane.core.bounds import INT64_MAX
from controlplane.core.states import Role
from controlplane.db.database import Database
from controlplane.schemas import problem_responses
from controlplane.schemas.problems import AUTHENTICATED
from controlplane.services import agent as svc
from controlplane.services import nodes
from controlplane.services.auth import Principal
from controlplane.services.errors import Forbidden
from controlplane.services.logs import LogCap
from controlplane.settings import Settings

router = APIRouter(prefix="/api/v1/agent", tags=["agent"])
REPORT = problem_responses(*AUTHENTICATED, 413, 422)


@router.post("/register", response_model=wire.RegisterResponse,
             responses=problem_responses(*AUTHENTICATED, 409, 413, 422))
async def register(request: Request, req: wire.RegisterRequest, who: Principal = Depends(principal),
                   db: Database = Depends(get_db),
                   settings: Settings = Depends(get_settings)) -> wire.RegisterResponse:
    """A new node registers with a bootstrap token (or an admin's); a known node re-registers with
    its own node token (or an admin's): a bootstrap token never takes over a registered name."""
    if who.role not in (Role.BOOTSTRAP, Role.ADMIN, Role.AGENT):
        raise Forbidden("registering a node needs a bootstrap token, its node token or an admin token")
    answer = await run_agent_work(request, nodes.register, db, who, req, settings.heartbeat_interval_s,
                                  cordon_node_after=settings.unhealthy_gpus_to_cordon_node)
    answer.node_loss_timeout_s, answer.log_cap = settings.heartbeat_timeout_s, _log_cap(settings)
    return answer


@router.post("/heartbeat", response_model=wire.HeartbeatResponse, responses=REPORT)
async def heartbeat(request: Request, hb: wire.Heartbeat, who: Principal = Depends(agent),
                    db: Database = Depends(get_db),
                    settings: Settings = Depends(get_settings)) -> wire.HeartbeatResponse:
    answer = await run_agent_work(request, nodes.heartbeat, db, who, hb, settings.heartbeat_interval_s,
                                  cordon_node_after=settings.unhealthy_gpus_to_cordon_node)
    answer.node_loss_timeout_s, answer.log_cap = settings.heartbeat_timeout_s, _log_cap(settings)
    return answer


@router.get("/assignments", response_model=wire.Assignments,
            responses=problem_responses(*AUTHENTICATED, 422))
async def assignments(request: Request, wait: float = Query(0, ge=0, le=300),
                      epoch: int | None = Query(None, ge=0, le=INT64_MAX),
                      who: Principal = Depends(agent), db: Database = Depends(get_db)) -> wire.Assignments:
    """Answers at once when the node's epoch differs from ``epoch``; else waits up to ``wait``."""
    if epoch is not None and wait > 0:
        current = await run_agent_work(request, svc.node_epoch, db, who.node_id)
        if current == epoch:
            watcher = getattr(request.app.state, "epochs", None)
            if watcher is None:
                settings: Settings = request.app.state.settings
                watcher = request.app.state.epochs = EpochWatcher(db, settings.assignment_poll_s)
            await watcher.wait_change(who.node_id, epoch, wait, request.is_disconnected)
    return await run_agent_work(request, svc.assignments, db, who)


@router.post("/status", response_model=wire.Ack, responses=REPORT)
async def status(request: Request, batch: wire.StatusBatch, who: Principal = Depends(agent),
                 db: Database = Depends(get_db)) -> wire.Ack:
    return await run_agent_work(request, svc.report_status, db, who, batch)


@router.post("/logs", response_model=wire.Ack, responses=REPORT)
async def logs(request: Request, batch: wire.LogBatch, who: Principal = Depends(agent),
               db: Database = Depends(get_db), settings: Settings = Depends(get_settings)) -> wire.Ack:
    cap = _log_cap(settings)
    return await run_agent_work(request, svc.ingest_logs, db, who, batch,
                                LogCap(cap.max_bytes, cap.head_bytes))


def _log_cap(settings: Settings) -> wire.LogCap:
    return wire.LogCap(max_bytes=settings.log_max_bytes,
                       head_bytes=min(settings.log_head_bytes, settings.log_max_bytes))
