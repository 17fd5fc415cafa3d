"""Usage & chargeback page: GPU-hours allocated and used per team, queue, user, model or job over
a date range, a chart over time, and the same table as CSV."""

from __future__ import annotations

import time
from datetime import UTC, date, datetime, timedelta

from fastapi import APIRouter, Request
from fastapi.responses import Response

from controlplane.schemas.usage import UsageReport, report_csv
from controlplane.services import reports
from controlplane.services.errors import Invalid
from controlplane.web import render, usage_view
from controlplane.web.pagekit import dashboard_page
from controlplane.web.session import database

router = APIRouter(include_in_schema=False)
DEFAULT_DAYS = 7  # a month of a large pool is a few seconds of SQL: ask for it explicitly


def _range(request: Request) -> tuple[str, str, float, float, str]:
    """(from date, to date, start, end, by) from the query: whole UTC days, ``to`` included."""
    p = request.query_params
    today = datetime.now(UTC).date()
    by = p.get("by") or "team"
    if by not in reports.GROUPS:
        raise Invalid("by", f"use one of {', '.join(reports.GROUPS)}")
    days = []
    for name, default in (("from", today - timedelta(days=DEFAULT_DAYS - 1)), ("to", today)):
        raw = p.get(name) or ""
        try:
            days.append(date.fromisoformat(raw) if raw else default)
        except ValueError:
            raise Invalid(name, f"must be a date like {today.isoformat()}, got {raw[:40]!r}") from None
    start = datetime.combine(days[0], datetime.min.time(), UTC).timestamp()
    end = min(datetime.combine(days[1] + timedelta(days=1), datetime.min.time(), UTC).timestamp(), time.time())
    if end <= start:
        raise Invalid("to", "must not be before from (and from not in the future)")
    return days[0].isoformat(), days[1].isoformat(), start, end, by


@router.get("/reports/usage")
@dashboard_page
def usage_page(request: Request, who):  # noqa: ANN001
    first, last, start, end, by = _range(request)
    report = reports.usage_report(database(request), who, start, end, by)
    return render.page("usage_report.html", who=who, nav="usage", r=report, first=first, last=last,
                       by=by, groups=reports.GROUPS, chart=usage_view.report_chart(report))


@router.get("/reports/usage.csv")
@dashboard_page
def usage_csv(request: Request, who):  # noqa: ANN001
    first, last, start, end, by = _range(request)
    report = UsageReport.model_validate(reports.usage_report(database(request), who, start, end, by,
                                                             timeline=False))
    return Response(report_csv(report), media_type="text/csv; charset=utf-8", headers={
        **render.SECURITY_HEADERS,
        "Content-Disposition": f'attachment; filename="gpupool-usage-by-{by}-{first}-{last}.csv"'})
