"""/api/v1/jobs: submit, list, get, cancel, logs (tail and follow), events."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Body, Depends, Header, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse

from controlplane.api.deps import get_db, user
from controlplane.db.database import Database
from controlplane.services import jobs, logs
from controlplane.services.auth import Principal

router = APIRouter(prefix="/api/v1", tags=["jobs"])


@router.post("/jobs", status_code=201)
def submit_job(request: Request, spec: Any = Body(..., description="a job spec (workloads/specs.py)"),
               idempotency_key: str | None = Header(None, alias="Idempotency-Key"),
               who: Principal = Depends(user), db: Database = Depends(get_db)) -> Response:
    job, created = jobs.submit(db, who, spec, idempotency_key,
                               max_pending=request.app.state.settings.max_pending_per_queue)
    if created:
        request.app.state.kick_scheduler()
    return JSONResponse(job, status_code=201 if created else 200)


@router.get("/jobs")
def list_jobs(status: str | None = None, queue: str | None = None, team: str | None = None,
              limit: int = Query(50, ge=1, le=1000), cursor: str | None = None,
              who: Principal = Depends(user), db: Database = Depends(get_db)) -> dict:
    return jobs.list_jobs(db, who, status=status, queue=queue, team=team, limit=limit, cursor=cursor)


@router.get("/jobs/{job_id}")
def get_job(job_id: str, who: Principal = Depends(user), db: Database = Depends(get_db)) -> dict:
    return jobs.get_job(db, who, job_id)


@router.post("/jobs/{job_id}/cancel")
def cancel_job(job_id: str, who: Principal = Depends(user), db: Database = Depends(get_db)) -> dict:
    return jobs.cancel(db, who, job_id)


@router.get("/jobs/{job_id}/events")
def job_events(job_id: str, who: Principal = Depends(user), db: Database = Depends(get_db)) -> dict:
    return jobs.job_events(db, who, job_id)


@router.get("/jobs/{job_id}/logs")
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
