"""Jobs pages: the queue with pending reasons and filters, a job's page (logs, progress, events)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse

from controlplane.core.states import JobState
from controlplane.services import jobs as jobs_service
from controlplane.services import logs as logs_service
from controlplane.services import usage as usage_service
from controlplane.services.errors import Invalid
from controlplane.web import queries, render, usage_view
from controlplane.web.pagekit import dashboard_page
from controlplane.web.session import database

router = APIRouter(include_in_schema=False)

PAGE_SIZE = 50


@router.get("/jobs")
@dashboard_page
def jobs(request: Request, who):  # noqa: ANN001
    db = database(request)
    p = request.query_params
    status, queue, team = p.get("status", ""), p.get("queue", ""), p.get("team", "")
    if status and status not in {s.value for s in JobState}:
        raise Invalid("status", f"unknown status {status!r}")
    page = jobs_service.list_jobs(db, who, status=status or None, queue=queue or None,
                                  team=(team or None) if who.is_admin else None, limit=PAGE_SIZE,
                                  cursor=p.get("cursor") or None)
    filters = {"status": status, "queue": queue, "team": team}
    ctx = dict(who=who, nav="jobs", page=page, f=filters, states=[s.value for s in JobState],
               queues=queries.queue_names(db, None if who.is_admin else who.team_id),
               teams=queries.team_names(db) if who.is_admin else [],
               counts=queries.job_counts(db, None if who.is_admin else who.team_id))
    if request.headers.get("hx-request") and request.headers.get("hx-target") == "job-table":
        return render.page("partials/job_table.html", **ctx)
    return render.page("jobs.html", **ctx)


@router.get("/jobs/{job_id}")
@dashboard_page
def job(request: Request, who, job_id: str):  # noqa: ANN001
    db = database(request)
    j = jobs_service.get_job(db, who, job_id)
    evs = jobs_service.job_events(db, who, job_id)["items"]
    text, _, final = logs_service.read(db, who, job_id, tail=200)
    gpus = queries.accelerator_telemetry(db, [s["accelerator_uuid"] for m in j.get("placement") or []
                                              for s in m.get("slices", [])]) if not final else {}
    ctx = dict(j=j, logs=text, final=final, gpus=gpus)
    if request.headers.get("hx-request") and request.headers.get("hx-target") == "job-live":
        return render.page("partials/job_live.html", **ctx)
    usage = usage_service.job_usage(db, who, job_id)
    return render.page("job.html", who=who, nav="jobs", events=evs, usage=usage,
                       usage_charts=usage_view.job_charts(usage), **ctx)


@router.post("/jobs/{job_id}/cancel")
@dashboard_page
def cancel(request: Request, who, job_id: str):  # noqa: ANN001
    jobs_service.cancel(database(request), who, job_id)
    return RedirectResponse(f"/jobs/{job_id}", status_code=303)
