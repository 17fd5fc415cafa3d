"""Pure formatting of API objects (``controlplane.schemas``) into rich tables and lines (no I/O,
unit-tested)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from rich.console import Group
from rich.markup import escape
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from controlplane.core.states import JobState, NodeState
from controlplane.schemas import Capacity, CapacityFigures, Job, JobRequest, Node, PlacementMember, Queue

STATUS_STYLE = {
    JobState.PENDING: "yellow", JobState.SCHEDULED: "cyan", JobState.RUNNING: "bold cyan",
    JobState.SUCCEEDED: "green", JobState.FAILED: "bold red", JobState.CANCELLED: "magenta",
}


def fmt_mib(mib: float | int | None) -> str:
    if mib is None:
        return "-"
    if abs(mib) >= 1024:
        gib = mib / 1024
        return f"{gib:.0f} GiB" if gib >= 100 or gib == int(gib) else f"{gib:.1f} GiB"
    return f"{mib:.0f} MiB"


def fmt_gpus_milli(milli: float | int | None) -> str:
    """1000 milli = one GPU: '2', '0.25', '3.5'."""
    if milli is None:
        return "-"
    value = milli / 1000
    return f"{value:.0f}" if value == int(value) else f"{value:.3f}".rstrip("0").rstrip(".")


def fmt_request(request: JobRequest | None) -> str:
    """'0.25 GPU, 20 GiB' / '2 GPU' / '2 GPU x 2 nodes' / 'cpu only'."""
    if request is None:
        return "-"
    gpu, nodes, memory = request.gpu, request.nodes, request.gpu_memory_mib
    if not gpu and not memory:
        text = "cpu only"
    else:
        text = f"{fmt_gpus_milli(round(float(gpu) * 1000))} GPU"
        if gpu < 1 and memory:
            text += f", {fmt_mib(memory)}"
    if nodes > 1:
        text += f" x {nodes} nodes"
    return text


def fmt_status(status: str | None) -> Text:
    return Text(str(status or "?"), style=STATUS_STYLE.get(status, ""))  # type: ignore[arg-type]


def parse_ts(value: datetime | str | None) -> datetime | None:
    if not value:
        return None
    if isinstance(value, datetime):
        ts = value
    else:
        try:
            ts = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            return None
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def fmt_age(value: Any, now: datetime | None = None) -> str:
    """'12s', '5m', '3h', '2d' since the timestamp."""
    ts = parse_ts(value)
    if ts is None:
        return "-"
    secs = max(0, int(((now or datetime.now(UTC)) - ts).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if secs >= size:
            return f"{secs // size}{unit}"
    return f"{secs}s"


def fmt_time(value: Any) -> str:
    """'2026-11-27 19:14:25 UTC (16s ago)' from an ISO timestamp; '-' when absent."""
    ts = parse_ts(value)
    if ts is None:
        return "-"
    return f"{ts.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC ({fmt_age(value)} ago)"


def fmt_duration(start: Any, end: Any) -> str:
    a, b = parse_ts(start), parse_ts(end)
    if not a:
        return "-"
    return fmt_age(start, b or datetime.now(UTC))


def progress_fraction(progress: dict | None) -> float | None:
    """step/total in [0, 1], or None when the job reports no usable progress."""
    if not isinstance(progress, dict):
        return None
    try:
        step, total = float(progress.get("step")), float(progress.get("total"))
    except (TypeError, ValueError):
        return None
    if total <= 0:
        return None
    return max(0.0, min(1.0, step / total))


def fmt_progress(progress: dict | None) -> str:
    frac = progress_fraction(progress)
    if frac is None:
        return "-"
    assert progress is not None
    return f"{frac * 100:.0f}% ({int(float(progress['step']))}/{int(float(progress['total']))})"


def fmt_reason(job: Job) -> str:
    """Why a job is where it is: the pending reason, else the status reason."""
    reason = job.pending_reason
    if job.status == JobState.PENDING and reason is not None and reason.message:
        return f"[{reason.code}] {reason.message}" if reason.code else reason.message
    if job.status in (JobState.SUCCEEDED, JobState.RUNNING, JobState.SCHEDULED):
        return ""
    return job.status_reason or ""


def jobs_table(jobs: list[Job], *, show_team: bool = True, width: int = 200) -> Table:
    """One row per job in ``width`` columns: names and reasons are cut short with an ellipsis.

    On a narrow terminal the team, queue and age columns go first (``gpupool job ID`` has them).
    """
    every = ["ID", "NAME", "STATUS", "QUEUE", "TEAM", "REQUEST", "PROGRESS", "AGE", "REASON"]
    values = {
        "ID": lambda j: j.id, "NAME": lambda j: j.name, "STATUS": lambda j: str(j.status),
        "QUEUE": lambda j: j.queue, "TEAM": lambda j: j.team, "REQUEST": lambda j: fmt_request(j.request),
        "PROGRESS": lambda j: fmt_progress(j.progress), "AGE": lambda j: fmt_age(j.created_at),
        "REASON": fmt_reason,
    }
    cols = [c for c in every if c != "TEAM" or show_team]
    rows = [{c: values[c](j) for c in every} for j in jobs]

    def natural(col: str) -> int:
        return max([len(col)] + [len(r[col]) for r in rows])

    def fixed_width(cs: list[str]) -> int:
        return sum(natural(c) for c in cs if c not in ("NAME", "REASON")) + 3 * len(cs) + 1

    for optional in ("TEAM", "QUEUE", "AGE"):
        if fixed_width(cols) + 12 + 20 <= width:
            break
        if optional in cols:
            cols.remove(optional)
    room = max(24, width - fixed_width(cols))
    widths = {c: natural(c) for c in cols}
    widths["NAME"] = min(widths["NAME"], max(12, room // 3))
    widths["REASON"] = min(widths["REASON"], max(len("REASON"), room - widths["NAME"]))
    table = Table(header_style="bold")
    for col in cols:
        table.add_column(col, no_wrap=True, width=widths[col])
    for row in rows:
        cells: list[Any] = [fmt_status(row[c]) if c == "STATUS" else escape(_cut(row[c], widths[c]))
                            for c in cols]
        table.add_row(*cells)
    return table


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"


def job_detail(job: Job) -> Group:
    """Everything about one job: fields, pending reason, progress bar, placement."""
    info = Table.grid(padding=(0, 2))
    info.add_column(style="bold")
    info.add_column()
    info.add_row("id", escape(job.id))
    info.add_row("name", escape(job.name))
    info.add_row("kind", escape(job.kind))
    info.add_row("status", fmt_status(job.status))
    info.add_row("team / queue", escape(f"{job.team} / {job.queue}"))
    info.add_row("user", escape(job.user or "-"))
    info.add_row("priority", str(job.priority))
    info.add_row("request", fmt_request(job.request))
    info.add_row("attempt", f"{job.attempt} of {job.max_attempts}")
    info.add_row("created", fmt_time(job.created_at))
    info.add_row("started", fmt_time(job.started_at))
    info.add_row("finished", fmt_time(job.finished_at))
    if job.started_at:
        info.add_row("run time", fmt_duration(job.started_at, job.finished_at))
    if job.exit_code is not None:
        info.add_row("exit code", str(job.exit_code))
    if job.endpoint:
        info.add_row("endpoint", escape(job.endpoint))
    reason = fmt_reason(job)
    if reason:
        pending = job.status == JobState.PENDING
        info.add_row("pending because" if pending else "reason", Text(reason, style="yellow" if pending else ""))
    start = job.pending_reason.details.get("expected_start") if job.pending_reason else None
    if job.status == JobState.PENDING and isinstance(start, (int, float)):
        info.add_row("expected start", datetime.fromtimestamp(start).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z"))
    if job.progress is not None:
        for label, cell in progress_rows(job.progress):
            info.add_row(label, cell)
    parts: list[Any] = [info]
    if job.placement:
        parts.append(placement_table(job.placement))
    return Group(*parts)


def progress_rows(progress: dict) -> list[tuple[str, Any]]:
    """A progress bar with step/total, and the other reported figures (loss, tokens/s...)."""
    rows: list[tuple[str, Any]] = []
    if progress.get("world_size"):
        rows.append(("topology", f"{progress['world_size']} ranks: {progress.get('nodes', 1)} node(s) x "
                                 f"{progress.get('ranks_per_node', 1)} per node"))
    if "ttft_ms" in progress or "tokens_per_s" in progress:
        rows.append(("serving", f"TTFT {_short(progress.get('ttft_ms', 0))} ms, "
                                f"{_short(progress.get('tokens_per_s', 0))} tokens/s, "
                                f"{_short(progress.get('ms_per_output_token', 0))} ms/token, KV cache "
                                f"{_short(100 * float(progress.get('kv_cache_usage') or 0))}%"))
    frac = progress_fraction(progress)
    if frac is not None:
        line = Table.grid(padding=(0, 1))
        line.add_row(ProgressBar(total=1.0, completed=frac, width=40), Text(fmt_progress(progress)))
        rows.append(("progress", line))
    extras = {k: v for k, v in progress.items() if k not in ("step", "total")}
    if extras:
        rows.append(("metrics", escape(", ".join(f"{k}={_short(v)}" for k, v in extras.items()))))
    return rows


def _short(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def placement_table(members: list[PlacementMember]) -> Table:
    table = Table(title="placement", header_style="bold", title_justify="left")
    for col in ("RANK", "NODE", "ACCELERATOR", "COMPUTE", "MEMORY"):
        table.add_column(col)
    for m in members:
        if not m.slices:  # a CPU-only member
            table.add_row(str(m.rank), escape(m.node), "-", "-", "-")
        for s in m.slices:
            table.add_row(str(m.rank), escape(m.node), escape(s.accelerator_uuid),
                          f"{fmt_gpus_milli(s.compute_milli)} GPU", fmt_mib(s.memory_mib))
    return table


def nodes_table(nodes: list[Node]) -> Table:
    """One row per node: its GPUs by model, what is allocated on them, and when it last spoke."""
    backends = {n.backend for n in nodes}
    one_backend = len(backends) == 1
    table = Table(header_style="bold", caption=f"backend: {backends.pop()}" if one_backend else None,
                  caption_justify="left")
    for col in ("NAME", "STATE", "GPUS", "ALLOCATED", "GPU MEMORY") + (() if one_backend else ("BACKEND",)) + ("SEEN",):
        table.add_column(col, no_wrap=True)
    for n in nodes:
        accs = n.accelerators
        models: dict[str, int] = {}
        for a in accs:
            models[a.model] = models.get(a.model, 0) + 1
        gpus = ", ".join(f"{c}x {m}" for m, c in sorted(models.items())) or "none"
        unhealthy = sum(1 for a in accs if not a.healthy)
        if unhealthy:
            gpus += f" ({unhealthy} unhealthy)"
        alloc = sum(a.allocated_milli for a in accs)
        mem = sum(a.memory_mib for a in accs)
        mem_alloc = sum(a.allocated_memory_mib for a in accs)
        state = str(n.state) + (" (cordoned)" if n.cordoned else "")
        seen = fmt_age(n.last_heartbeat_at)
        row: list[Any] = [escape(n.name),
                          Text(state, style="green" if state == NodeState.READY else "yellow"), escape(gpus),
                          f"{fmt_gpus_milli(alloc)}/{len(accs)}", f"{fmt_gib(mem_alloc)}/{fmt_mib(mem)}"]
        if not one_backend:
            row.append(escape(n.backend))
        row.append(f"{seen} ago" if seen != "-" else "-")
        table.add_row(*row)
    return table


def fmt_gib(mib: float | int | None) -> str:
    """A bare GiB figure for 'used/total' pairs: '40', '0', '19.9'."""
    if not mib:
        return "0"
    gib = mib / 1024
    return f"{gib:.0f}" if gib >= 100 or gib == int(gib) else f"{gib:.1f}"


def capacity_table(cap: Capacity) -> Table:
    """GPUs by vendor and model (in GPUs: 1 = 1000 milli): allocated, in use, free, memory."""
    table = Table(header_style="bold")
    for col in ("MODEL", "GPUS", "ALLOCATED", "IN USE", "FREE", "GPU MEMORY"):
        table.add_column(col, no_wrap=True)
    for r in cap.by_model:
        table.add_row(*_cap_row(r, escape(f"{r.vendor} {r.model}")))
    table.add_section()
    table.add_row(*_cap_row(cap.totals, Text("total", style="bold")))
    return table


def _cap_row(r: CapacityFigures, label: Any) -> list[Any]:
    milli, alloc = r.gpu_milli, r.allocated_milli
    pct = f" ({alloc * 100 / milli:.0f}%)" if milli else ""
    return [label, str(r.accelerators), f"{fmt_gpus_milli(alloc)}{pct}",
            fmt_gpus_milli(r.in_use_milli), fmt_gpus_milli(milli - alloc),
            f"{fmt_gib(r.allocated_memory_mib)}/{fmt_mib(r.memory_mib)}"]


def queues_table(queues: list[Queue]) -> Table:
    """Quota and use per queue, in GPUs (1 = 1000 compute milli)."""
    table = Table(header_style="bold", caption="figures in GPUs (1 = 1000 compute milli)",
                  caption_justify="left")
    for col in ("QUEUE", "TEAM", "GUARANTEE", "LIMIT", "WEIGHT", "IN USE", "RUNNING", "PENDING"):
        table.add_column(col, no_wrap=True)
    for q in queues:
        table.add_row(escape(q.name), escape(q.team), fmt_gpus_milli(q.guarantee_milli),
                      "none" if q.limit_milli is None else fmt_gpus_milli(q.limit_milli),
                      str(q.weight), fmt_gpus_milli(q.allocated_milli),
                      str(q.running_jobs), str(q.pending_jobs))
    return table
