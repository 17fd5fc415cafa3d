"""/api/v1 teams, queues, users, tokens, bootstrap tokens, whoami and the audit events."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Depends, Query

from controlplane.api.deps import get_db, principal, user
from controlplane.db.database import Database
from controlplane.services import admin as svc
from controlplane.services import events
from controlplane.services.auth import Principal
from controlplane.services.errors import Invalid

router = APIRouter(prefix="/api/v1", tags=["admin"])


def _obj(body: Any) -> dict:
    if not isinstance(body, dict):
        raise Invalid("body", "must be a JSON object")
    return body


@router.get("/whoami")
def whoami(who: Principal = Depends(principal)) -> dict:
    return {"user": who.user, "team": who.team, "role": who.role.value, "node": who.node}


@router.get("/teams")
def list_teams(who: Principal = Depends(user), db: Database = Depends(get_db)) -> dict:
    return svc.list_teams(db, who)


@router.post("/teams", status_code=201)
def create_team(body: Any = Body(...), who: Principal = Depends(user), db: Database = Depends(get_db)) -> dict:
    body = _obj(body)
    return svc.create_team(db, who, body.get("name"))


@router.get("/queues")
def list_queues(who: Principal = Depends(user), db: Database = Depends(get_db)) -> dict:
    return svc.list_queues(db, who)


@router.post("/queues", status_code=201)
def create_queue(body: Any = Body(...), who: Principal = Depends(user), db: Database = Depends(get_db)) -> dict:
    return svc.create_queue(db, who, _obj(body))


@router.patch("/queues/{name}")
def update_queue(name: str, body: Any = Body(...), team: str | None = None,
                 who: Principal = Depends(user), db: Database = Depends(get_db)) -> dict:
    return svc.update_queue(db, who, name, team, _obj(body))


@router.delete("/queues/{name}")
def delete_queue(name: str, team: str | None = None, who: Principal = Depends(user),
                 db: Database = Depends(get_db)) -> dict:
    return svc.delete_queue(db, who, name, team)


@router.get("/users")
def list_users(who: Principal = Depends(user), db: Database = Depends(get_db)) -> dict:
    return svc.list_users(db, who)


@router.post("/users", status_code=201)
def create_user(body: Any = Body(...), who: Principal = Depends(user), db: Database = Depends(get_db)) -> dict:
    return svc.create_user(db, who, _obj(body))


@router.get("/tokens")
def list_tokens(who: Principal = Depends(user), db: Database = Depends(get_db)) -> dict:
    return svc.list_tokens(db, who)


@router.post("/tokens", status_code=201)
def create_token(body: Any = Body(...), who: Principal = Depends(user), db: Database = Depends(get_db)) -> dict:
    return svc.create_token(db, who, _obj(body))


@router.delete("/tokens/{token_id}")
def delete_token(token_id: str, who: Principal = Depends(user), db: Database = Depends(get_db)) -> dict:
    return svc.delete_token(db, who, token_id)


@router.post("/bootstrap-tokens", status_code=201)
def create_bootstrap_token(who: Principal = Depends(user), db: Database = Depends(get_db)) -> dict:
    return svc.create_bootstrap_token(db, who)


@router.get("/events")
def list_events(job: str | None = None, node: str | None = None,
                limit: int = Query(100, ge=1, le=1000), cursor: str | None = None,
                who: Principal = Depends(user), db: Database = Depends(get_db)) -> dict:
    return events.list_events(db, who, job=job, node=node, limit=limit, cursor=cursor)
