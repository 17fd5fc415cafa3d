"""`gpupool report usage` (chargeback: GPU-hours by team, queue, user, model or job) and the
right-sizing step of `gpupool submit --like JOB_ID`."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any, get_args

import typer
from rich.markup import escape
from rich.table import Table

from controlplane.cli.context import target
from controlplane.cli.errors import CliError, console, handle_errors
from controlplane.cli.render import fmt_gpus_milli, fmt_mib
from controlplane.client import GpupoolClient
from controlplane.schemas.usage import ReportGroup, UsageReport, report_csv

report_app = typer.Typer(help="Reports: chargeback of GPU-hours allocated and used.", no_args_is_help=True)
GROUPS = get_args(ReportGroup)
FORMATS = ("table", "csv", "json")
RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)([mhdw])$")
UNITS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def register(app: typer.Typer) -> None:
    app.add_typer(report_app, name="report")


def parse_when(text: str, now: datetime | None = None) -> str:
    """'now', '7d' / '12h' / '30m' / '2w' ago, or an ISO date/time (UTC unless it says) -> ISO UTC."""
    now = now or datetime.now(UTC)
    text = text.strip()
    if text == "now":
        return now.isoformat()
    rel = RELATIVE.match(text)
    if rel:
        return (now - timedelta(seconds=float(rel.group(1)) * UNITS[rel.group(2)])).isoformat()
    try:
        ts = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise CliError(f"cannot read the time {text!r}; use an ISO date or time (2026-11-01, "
                       "2026-11-01T08:00), 'now', or an age such as 7d, 12h, 30m") from None
    return (ts if ts.tzinfo else ts.replace(tzinfo=UTC)).isoformat()


def report_table(report: UsageReport) -> Table:
    """One row per group and a total: GPU-hours allocated, used, unused; memory GiB-hours."""
    table = Table(header_style="bold", title=f"GPU usage by {report.by}, {report.from_:%Y-%m-%d %H:%M} "
                                            f"to {report.to:%Y-%m-%d %H:%M} UTC")
    for col in (report.by.upper(), "JOBS", "ALLOC GPU-H", "USED GPU-H", "UNUSED GPU-H", "USED %",
                "ALLOC MEM GIB-H", "USED MEM GIB-H"):
        table.add_column(col, justify="left" if col == report.by.upper() else "right", no_wrap=True)

    def cells(key: str, r: Any) -> list[str]:
        pct = f"{100 * r.used_gpu_hours / r.allocated_gpu_hours:.0f}%" if r.allocated_gpu_hours else "-"
        return [escape(key), str(r.jobs), f"{r.allocated_gpu_hours:.2f}", f"{r.used_gpu_hours:.2f}",
                f"{r.unused_gpu_hours:.2f}", pct, f"{r.allocated_memory_gib_hours:.1f}",
                f"{r.used_memory_gib_hours:.1f}"]

    for r in report.rows:
        table.add_row(*cells(r.key, r))
    table.add_row(*cells("total", report.totals), style="bold", end_section=False)
    return table


@report_app.command("usage")
@handle_errors
def usage(
    ctx: typer.Context,
    start: str = typer.Option("30d", "--from", help="start: ISO date/time, or an age (7d, 12h)"),
    end: str = typer.Option("now", "--to", help="end: ISO date/time, 'now', or an age"),
    by: str = typer.Option("team", "--by", help="team, queue, user, model or job"),
    fmt: str = typer.Option("table", "--format", "-o", help="table, csv or json"),
) -> None:
    """GPU-hours allocated and used (compute and memory) per group over a time range."""
    if by not in GROUPS:
        raise CliError(f"--by {by!r}: use one of {', '.join(GROUPS)}")
    if fmt not in FORMATS:
        raise CliError(f"--format {fmt!r}: use one of {', '.join(FORMATS)}")
    with target(ctx).client() as client:
        report = client.usage_report(start=parse_when(start), end=parse_when(end), by=by)
    if fmt == "json":
        print(report.model_dump_json(by_alias=True, indent=2))
    elif fmt == "csv":
        print(report_csv(report), end="")
    elif not report.rows:
        console.print(f"no GPU allocations between {report.from_:%Y-%m-%d %H:%M} and {report.to:%Y-%m-%d %H:%M} UTC")
    else:
        console.print(report_table(report))


def _fmt_gpu(gpu: float | None, memory_mib: int | None) -> str:
    if gpu is None:
        return "-"
    text = f"{fmt_gpus_milli(round(gpu * 1000))} GPU"
    return f"{text}, {fmt_mib(memory_mib)}" if memory_mib else text


def like_spec(client: GpupoolClient, job_id: str, *, yes: bool) -> dict[str, Any]:
    """Job ``job_id``'s spec with its right-sized request, after showing the change (and asking)."""
    job = client.get_job(job_id)
    if not job.spec:
        raise CliError(f"job {job_id} has no stored spec to re-submit")
    usage = client.job_usage(job_id)
    rec, basis = usage.recommendation, usage.summary
    if rec.gpu is None:
        raise CliError(f"no right-sized request for job {job_id}: {rec.reason}")
    spec = {**job.spec, "team": job.team}
    resources = dict(spec.get("resources") or {})
    resources["gpu"] = rec.gpu
    resources["gpu_memory_mib"] = rec.gpu_memory_mib or 0
    spec["resources"] = resources
    p95 = "-" if basis.util_p95_pct is None else f"{basis.util_p95_pct:.1f}%"
    console.print(f"job [bold]{escape(job.id)}[/] ({escape(job.name)}) used p95 compute {p95} of a GPU and "
                  f"at most {fmt_mib(basis.memory_peak_mib)} over {basis.minutes:.0f} min "
                  f"({escape(rec.rule)}).")
    console.print(f"request: {_fmt_gpu(rec.current_gpu, rec.current_gpu_memory_mib)} -> "
                  f"[bold]{_fmt_gpu(rec.gpu, rec.gpu_memory_mib)}[/]"
                  + (f" ({escape(rec.reason)})" if rec.reason else ""))
    if not yes and not typer.confirm("Submit it with this request?", default=True):
        raise typer.Exit(1)
    return spec
