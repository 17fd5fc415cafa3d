"""/api/v1 teams, queues, users, tokens, bootstrap tokens, whoami and the audit events."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Path, Query

from controlplane.api.deps import get_db, principal, user
from controlplane.core.bounds import ID_PATTERN, NO_NUL
from controlplane.db.database import Database
from controlplane.schemas import (EventPage, Queue, QueueCreate, QueueList, QueueUpdate,
                                  Team, TeamCreate, TeamList, TokenCreate, TokenCreated, TokenList,
                                  TokenRevoked, User, UserCreate, UserList, Whoami, problem_responses)
from controlplane.schemas.base import NAME_PATTERN
from controlplane.schemas.problems import AUTHENTICATED
from controlplane.services import admin as svc
from controlplane.services import events
from controlplane.services.auth import Principal

router = APIRouter(prefix="/api/v1", tags=["admin"])
READ = problem_responses(*AUTHENTICATED)
CREATE = problem_responses(*AUTHENTICATED, 409, 413, 422)
QUEUE = Path(pattern=NAME_PATTERN, description="the queue's name")
TEAM = Query(None, pattern=NAME_PATTERN, description="the queue's team, when the name is in several")


@router.get("/whoami", response_model=Whoami, responses=problem_responses(401, 429, 503))
def whoami(who: Principal = Depends(principal)) -> dict:
    return {"user": who.user, "team": who.team, "role": who.role.value, "node": who.node}


@router.get("/teams", response_model=TeamList, responses=READ)
def list_teams(who: Principal = Depends(user), db: Database = Depends(get_db)) -> dict:
    return svc.list_teams(db, who)


@router.post("/teams", status_code=201, response_model=Team, responses=CREATE)
def create_team(body: TeamCreate, who: Principal = Depends(user), db: Database = Depends(get_db)) -> dict:
    return svc.create_team(db, who, body.name)


@router.get("/queues", response_model=QueueList, responses=READ)
def list_queues(who: Principal = Depends(user), db: Database = Depends(get_db)) -> dict:
    return svc.list_queues(db, who)


@router.post("/queues", status_code=201, response_model=Queue, responses=CREATE)
def create_queue(body: QueueCreate, who: Principal = Depends(user), db: Database = Depends(get_db)) -> dict:
    return svc.create_queue(db, who, body)


@router.patch("/queues/{name}", response_model=Queue,
              responses=problem_responses(*AUTHENTICATED, 404, 413, 422))
def update_queue(body: QueueUpdate, name: str = QUEUE, team: str | None = TEAM,
                 who: Principal = Depends(user), db: Database = Depends(get_db)) -> dict:
    return svc.update_queue(db, who, name, team, body)


@router.delete("/queues/{name}", response_model=Queue,
               responses=problem_responses(*AUTHENTICATED, 404, 409, 422))
def delete_queue(name: str = QUEUE, team: str | None = TEAM, who: Principal = Depends(user),
                 db: Database = Depends(get_db)) -> dict:
    return svc.delete_queue(db, who, name, team)


@router.get("/users", response_model=UserList, responses=READ)
def list_users(who: Principal = Depends(user), db: Database = Depends(get_db)) -> dict:
    return svc.list_users(db, who)


@router.post("/users", status_code=201, response_model=User, responses=CREATE)
def create_user(body: UserCreate, who: Principal = Depends(user), db: Database = Depends(get_db)) -> dict:
    return svc.create_user(db, who, body)


@router.get("/tokens", response_model=TokenList, responses=READ)
def list_tokens(who: Principal = Depends(user), db: Database = Depends(get_db)) -> dict:
    return svc.list_tokens(db, who)


@router.post("/tokens", status_code=201, response_model=TokenCreated,
             responses=problem_responses(*AUTHENTICATED, 413, 422))
def create_token(body: TokenCreate, who: Principal = Depends(user), db: Database = Depends(get_db)) -> dict:
    return svc.create_token(db, who, body)


@router.delete("/tokens/{token_id}", response_model=TokenRevoked,
               responses=problem_responses(*AUTHENTICATED, 404))
def delete_token(token_id: str, who: Principal = Depends(user), db: Database = Depends(get_db)) -> dict:
    return svc.delete_token(db, who, token_id)


@router.get("/events", response_model=EventPage, responses=problem_responses(*AUTHENTICATED, 404, 422))
def list_events(job: str | None = Query(None, description="a job id"),
                node: str | None = Query(None, max_length=253, pattern=NO_NUL, description="a node name"),
                limit: int = Query(100, ge=1, le=1000),
                cursor: str | None = Query(None, pattern=ID_PATTERN, description="a page's next_cursor"),
                who: Principal = Depends(user), db: Database = Depends(get_db)) -> dict:
    return events.list_events(db, who, job=job, node=node, limit=limit, cursor=cursor)
