"""/api/v1/jobs: submit, list, get, cancel, logs (tail and follow), events."""

from __future__ import annotations

import asyncio
from functools import cache
from typing import Any, Literal

from fastapi import APIRouter, Body, Depends, Header, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import PlainTextResponse, StreamingResponse
from pydantic import TypeAdapter

from controlplane.api.deps import get_db, user
from controlplane.core.bounds import ID_PATTERN
from controlplane.db.database import Database
from controlplane.schemas import EventList, Job, JobPage, problem_responses
from controlplane.schemas.base import NAME_PATTERN
from controlplane.schemas.problems import AUTHENTICATED, inline_refs
from controlplane.services import jobs, logs
from controlplane.services.auth import Principal
from controlplane.services.errors import Invalid
from workloads.specs import JobSpec

router = APIRouter(prefix="/api/v1", tags=["jobs"])
SPEC_PAGE_LIMIT = 100  # pages with full specs (each up to 256 KiB) are smaller


@cache
def job_spec_schema() -> dict:
    """The JSON schema of a submit: any kind of spec (``workloads/specs.py``), plus ``team``."""
    schema = inline_refs(TypeAdapter(JobSpec).json_schema())
    for variant in schema["oneOf"]:
        variant["properties"]["team"] = {"type": "string", "description": "admins: submit for this team"}
    return schema


def nul_path(value: object, path: str = "") -> str | None:
    """The dotted path of the first string in a JSON value that holds NUL (it can never start)."""
    if isinstance(value, str):
        return (path or "body") if "\x00" in value else None
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        where = f"{path}.{key}" if path else str(key)
        if "\x00" in str(key):
            return where
        found = nul_path(item, where)
        if found:
            return found
    return None


@router.post("/jobs", status_code=201, response_model=Job,
             responses={200: {"model": Job, "description": "an earlier submit with this Idempotency-Key"},
                        **problem_responses(*AUTHENTICATED, 413, 422)},
             openapi_extra={"requestBody": {"required": True, "content": {
                 "application/json": {"schema": job_spec_schema()}}}})
def submit_job(request: Request, response: Response,
               spec: dict[str, Any] = Body(..., description="a job spec (workloads/specs.py)"),
               idempotency_key: str | None = Header(None, alias="Idempotency-Key", min_length=1,
                                                    max_length=256),
               who: Principal = Depends(user), db: Database = Depends(get_db)) -> dict:
    bad = nul_path(spec)
    if bad:
        raise Invalid(bad, "must not contain NUL characters")
    job, created = jobs.submit(db, who, spec, idempotency_key,
                               max_pending=request.app.state.settings.max_pending_per_queue)
    if created:
        request.app.state.kick_scheduler()  # an idle pool places the job at once
    else:
        response.status_code = 200
    return job


@router.get("/jobs", response_model=JobPage, responses=problem_responses(*AUTHENTICATED, 422))
def list_jobs(status: str | None = Query(None, max_length=200, description="one or more, comma-separated"),
              queue: str | None = Query(None, pattern=NAME_PATTERN),
              team: str | None = Query(None, pattern=NAME_PATTERN),
              limit: int = Query(50, ge=1, le=1000, description=f"at most {SPEC_PAGE_LIMIT} with include=spec"),
              cursor: str | None = Query(None, pattern=ID_PATTERN, description="a page's next_cursor"),
              include: Literal["spec"] | None = Query(None, description="spec: each job's full spec"),
              who: Principal = Depends(user), db: Database = Depends(get_db)) -> dict:
    if include == "spec" and limit > SPEC_PAGE_LIMIT:
        raise Invalid("limit", f"must be at most {SPEC_PAGE_LIMIT} with include=spec")
    return jobs.list_jobs(db, who, status=status, queue=queue, team=team, limit=limit, cursor=cursor,
                          include_spec=include == "spec")


@router.get("/jobs/{job_id}", response_model=Job, responses=problem_responses(*AUTHENTICATED, 404))
def get_job(job_id: str, who: Principal = Depends(user), db: Database = Depends(get_db)) -> dict:
    return jobs.get_job(db, who, job_id)


@router.post("/jobs/{job_id}/cancel", response_model=Job,
             responses=problem_responses(*AUTHENTICATED, 404, 409, 413))
def cancel_job(job_id: str, who: Principal = Depends(user), db: Database = Depends(get_db)) -> dict:
    return jobs.cancel(db, who, job_id)


@router.get("/jobs/{job_id}/events", response_model=EventList,
            responses=problem_responses(*AUTHENTICATED, 404))
def job_events(job_id: str, who: Principal = Depends(user), db: Database = Depends(get_db)) -> dict:
    return jobs.job_events(db, who, job_id)


@router.get("/jobs/{job_id}/logs", response_class=PlainTextResponse, response_model=None,
            responses={200: {"description": "the log text (streamed with follow=true)",
                             "content": {"text/plain": {"schema": {"type": "string"}}}},
                       **problem_responses(*AUTHENTICATED, 404, 422, 429)})
async def job_logs(request: Request, job_id: str, tail: int | None = Query(None, ge=0, le=1_000_000),
                   rank: int = Query(0, ge=0, le=100_000), follow: bool = False,
                   who: Principal = Depends(user), db: Database = Depends(get_db)) -> Response:
    text, position, final = await run_in_threadpool(logs.read, db, who, job_id, rank=rank, tail=tail)
    if not follow:
        return PlainTextResponse(text)
    followers = request.app.state.log_followers
    slot = followers.acquire()  # bounded: a flood of followers gets 429, not the server's memory

    async def stream():  # noqa: ANN202
        nonlocal position, final
        try:
            yield text
            while not final:
                await asyncio.sleep(0.5)
                more, position, final = await run_in_threadpool(logs.read_after, db, who, job_id,
                                                                rank=rank, position=position)
                if more:
                    yield more
        finally:
            followers.release(slot)

    return StreamingResponse(stream(), media_type="text/plain; charset=utf-8")
