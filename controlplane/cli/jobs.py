"""Job commands: submit, jobs, job, logs, cancel."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import typer
from rich.live import Live
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from controlplane.cli.context import target
from controlplane.cli.errors import CliError, console, handle_errors
from controlplane.cli.render import fmt_reason, job_detail, jobs_table, progress_fraction
from controlplane.cli.specfile import load_spec_file
from controlplane.cli.usage import like_spec
from controlplane.client import GpupoolClient
from controlplane.core.states import FINAL_STATES, JobState
from controlplane.schemas import Job

JOB_STATUSES = tuple(s.value for s in JobState)


def register(app: typer.Typer) -> None:
    app.command("submit")(submit)
    app.command("jobs")(list_jobs)
    app.command("job")(show_job)
    app.command("logs")(logs)
    app.command("cancel")(cancel)


@handle_errors
def submit(
    ctx: typer.Context,
    file: Path = typer.Argument(None, help="job spec (YAML or JSON)", show_default=False),
    queue: str = typer.Option(None, "--queue", "-q", help="override the spec's queue"),
    name: str = typer.Option(None, "--name", help="override the spec's name"),
    idempotency_key: str = typer.Option(None, "--idempotency-key", help="retry-safe submit key"),
    wait: bool = typer.Option(False, "--wait", "-w", help="follow the job until it is final"),
    quiet: bool = typer.Option(False, "--quiet", help="print only the job id"),
    like: str = typer.Option(None, "--like", metavar="JOB_ID",
                             help="re-submit that job's spec with the request its observed use calls for"),
    yes: bool = typer.Option(False, "--yes", "-y", help="with --like: submit without asking"),
) -> None:
    """Submit a job spec (or, with --like, a right-sized copy of a job); prints the job id."""
    if (file is None) == (like is None):
        raise CliError("give a job spec file, or --like JOB_ID (not both)")
    with target(ctx).client() as client:
        spec = load_spec_file(file) if file is not None else like_spec(client, like, yes=yes)
        if queue:
            spec["queue"] = queue
        if name:
            spec["name"] = name
        job = client.submit_job(spec, idempotency_key=idempotency_key)
        if quiet:
            print(job.id)
        else:
            console.print(f"submitted job [bold]{escape(job.id)}[/] ({escape(job.name)}) to queue "
                          f"{escape(job.queue)}: {job.status}")
        if wait:
            final = watch_job(client, job.id)
            if final.status != JobState.SUCCEEDED:
                raise typer.Exit(1)


@handle_errors
def list_jobs(
    ctx: typer.Context,
    status: str = typer.Option(None, "--status", "-s", help="pending, running, succeeded, ..."),
    queue: str = typer.Option(None, "--queue", "-q"),
    team: str = typer.Option(None, "--team"),
    limit: int = typer.Option(50, "--limit", "-n", min=1, max=1000, help="jobs to show"),
) -> None:
    """List jobs (newest first) with status and the reason a job is pending."""
    if status and status not in JOB_STATUSES:
        raise CliError(f"unknown status {status!r}; use one of {', '.join(JOB_STATUSES)}")
    with target(ctx).client() as client:
        items = []
        for job in client.iter_jobs(status=status, queue=queue, team=team,
                                    limit=min(limit, 200)):
            items.append(job)
            if len(items) >= limit:
                break
    if not items:
        console.print("no jobs")
        return
    teams = {j.team for j in items}
    console.print(jobs_table(items, show_team=len(teams) > 1, width=console.width))


@handle_errors
def show_job(
    ctx: typer.Context,
    job_id: str = typer.Argument(..., metavar="ID", show_default=False),
    watch: bool = typer.Option(False, "--watch", "-w", help="refresh until the job is final"),
) -> None:
    """Details of one job: status, pending reason, placement, progress."""
    with target(ctx).client() as client:
        job = client.get_job(job_id)
        if not watch or job.status in FINAL_STATES:
            console.print(job_detail(job))
            return
        with Live(job_detail(job), console=console, refresh_per_second=4) as live:
            while job.status not in FINAL_STATES:
                time.sleep(1.0)
                job = client.get_job(job_id)
                live.update(job_detail(job))


@handle_errors
def logs(
    ctx: typer.Context,
    job_id: str = typer.Argument(..., metavar="ID", show_default=False),
    follow: bool = typer.Option(False, "--follow", "-f", help="stream until the job is final"),
    tail: int = typer.Option(None, "--tail", "-t", min=1, help="only the last N lines"),
    rank: int = typer.Option(None, "--rank", "-r", min=0, help="gang member (default: rank 0)"),
) -> None:
    """Print a job's logs (stdout and stderr of its process)."""
    with target(ctx).client(timeout=60.0) as client:
        if follow:
            for chunk in client.follow_logs(job_id, tail=tail, rank=rank):
                sys.stdout.write(chunk)
                sys.stdout.flush()
        else:
            text = client.job_logs(job_id, tail=tail, rank=rank)
            sys.stdout.write(text)
            if text and not text.endswith("\n"):
                sys.stdout.write("\n")


@handle_errors
def cancel(ctx: typer.Context, job_id: str = typer.Argument(..., metavar="ID", show_default=False)) -> None:
    """Cancel a job (a running one is stopped: SIGTERM, then SIGKILL after its grace period)."""
    with target(ctx).client() as client:
        job = client.cancel_job(job_id)
    console.print(f"job [bold]{escape(job.id)}[/]: {job.status}"
                  + (f" ({escape(job.status_reason)})" if job.status_reason else ""))


def watch_job(client: GpupoolClient, job_id: str, timeout: float = 24 * 3600) -> Job:
    """Show a spinner while pending and a progress bar while running; returns the final job."""
    progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                        TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn(), console=console,
                        transient=False)
    with progress:
        task = progress.add_task(f"job {job_id}", total=None)

        def update(job: Job) -> None:
            status = job.status
            reason = fmt_reason(job) if status == JobState.PENDING else ""
            desc = f"job {job_id} [bold]{status}[/]" + (f" - {escape(reason)}" if reason else "")
            frac = progress_fraction(job.progress)
            if status == JobState.SUCCEEDED:
                frac = 1.0
            progress.update(task, description=desc, total=1.0 if frac is not None else None,
                            completed=frac or 0)

        job = client.wait_for_job(job_id, timeout=timeout, interval=1.0, on_update=update)
    console.print(f"job {escape(str(job_id))} {job.status}"
                  + (f" (exit code {job.exit_code})" if job.exit_code is not None else ""))
    return job
