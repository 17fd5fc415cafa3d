"""Pure formatting of API objects into rich tables and lines (no I/O, unit-tested)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from rich.console import Group
from rich.markup import escape
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

STATUS_STYLE = {
    "pending": "yellow", "scheduled": "cyan", "running": "bold cyan", "succeeded": "green",
    "failed": "bold red", "cancelled": "magenta", "lost": "red",
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


def fmt_request(request: dict | None) -> str:
    """'0.25 GPU, 20 GiB' / '2 GPU' / '2 GPU x 2 nodes' / 'cpu only'."""
    if not request:
        return "-"
    gpu = request.get("gpu") or 0
    nodes = request.get("nodes") or 1
    if not gpu and not request.get("gpu_memory_mib"):
        text = "cpu only"
    else:
        text = f"{fmt_gpus_milli(round(float(gpu) * 1000))} GPU"
        if gpu < 1 and request.get("gpu_memory_mib"):
            text += f", {fmt_mib(request['gpu_memory_mib'])}"
    if nodes > 1:
        text += f" x {nodes} nodes"
    return text


def fmt_status(status: str | None) -> Text:
    status = status or "?"
    return Text(status, style=STATUS_STYLE.get(status, ""))


def parse_ts(value: Any) -> datetime | None:
    if not value:
        return None
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


def fmt_reason(job: dict) -> str:
    """Why a job is where it is: the pending reason, else the status reason."""
    reason = job.get("pending_reason")
    if job.get("status") == "pending" and isinstance(reason, dict) and reason.get("message"):
        code = reason.get("code")
        return f"[{code}] {reason['message']}" if code else str(reason["message"])
    if job.get("status") in ("succeeded", "running", "scheduled"):
        return ""
    return str(job.get("status_reason") or "")


def placement_summary(job: dict) -> str:
    """'node-0: 2 slices' style one-liner for the jobs table."""
    members = job.get("placement") or []
    if not members:
        return "-"
    nodes: dict[str, int] = {}
    for m in members:
        nodes[m.get("node", "?")] = nodes.get(m.get("node", "?"), 0) + len(m.get("slices") or [])
    return ", ".join(f"{n}({c})" for n, c in nodes.items())


def jobs_table(jobs: list[dict], *, show_team: bool = True, width: int = 200) -> Table:
    """One row per job in ``width`` columns: names and reasons are cut short with an ellipsis.

    On a narrow terminal the team, queue and age columns go first (``gpupool job ID`` has them).
    """
    every = ["ID", "NAME", "STATUS", "QUEUE", "TEAM", "REQUEST", "PROGRESS", "AGE", "REASON"]
    values = {
        "ID": lambda j: str(j.get("id", "")), "NAME": lambda j: str(j.get("name", "")),
        "STATUS": lambda j: str(j.get("status", "?")), "QUEUE": lambda j: str(j.get("queue", "")),
        "TEAM": lambda j: str(j.get("team", "")), "REQUEST": lambda j: fmt_request(j.get("request")),
        "PROGRESS": lambda j: fmt_progress(j.get("progress")),
        "AGE": lambda j: fmt_age(j.get("created_at")), "REASON": fmt_reason,
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


def job_detail(job: dict) -> Group:
    """Everything about one job: fields, pending reason, progress bar, placement."""
    info = Table.grid(padding=(0, 2))
    info.add_column(style="bold")
    info.add_column()
    info.add_row("id", escape(str(job.get("id"))))
    info.add_row("name", escape(str(job.get("name"))))
    info.add_row("kind", escape(str(job.get("kind", "custom"))))
    info.add_row("status", fmt_status(job.get("status")))
    info.add_row("team / queue", escape(f"{job.get('team')} / {job.get('queue')}"))
    info.add_row("user", escape(str(job.get("user") or "-")))
    info.add_row("priority", escape(str(job.get("priority"))))
    info.add_row("request", fmt_request(job.get("request")))
    info.add_row("attempt", f"{job.get('attempt', 0)} of {job.get('max_attempts', '?')}")
    info.add_row("created", fmt_time(job.get("created_at")))
    info.add_row("started", fmt_time(job.get("started_at")))
    info.add_row("finished", fmt_time(job.get("finished_at")))
    if job.get("started_at"):
        info.add_row("run time", fmt_duration(job.get("started_at"), job.get("finished_at")))
    if job.get("exit_code") is not None:
        info.add_row("exit code", str(job["exit_code"]))
    if job.get("endpoint"):
        info.add_row("endpoint", escape(str(job["endpoint"])))
    reason = fmt_reason(job)
    if reason:
        label = "pending because" if job.get("status") == "pending" else "reason"
        info.add_row(label, Text(reason, style="yellow" if job.get("status") == "pending" else ""))
    if isinstance(job.get("progress"), dict):
        for label, cell in progress_rows(job["progress"]):
            info.add_row(label, cell)
    parts: list[Any] = [info]
    members = job.get("placement") or []
    if members:
        parts.append(placement_table(members))
    return Group(*parts)


def progress_rows(progress: dict) -> list[tuple[str, Any]]:
    """A progress bar with step/total, and the other reported figures (loss, tokens/s...)."""
    rows: list[tuple[str, Any]] = []
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


def placement_table(members: list[dict]) -> Table:
    table = Table(title="placement", header_style="bold", title_justify="left")
    for col in ("RANK", "NODE", "ACCELERATOR", "COMPUTE", "MEMORY"):
        table.add_column(col)
    for m in members:
        slices = m.get("slices") or [{}]
        for s in slices:
            table.add_row(str(m.get("rank", 0)), escape(str(m.get("node", "?"))),
                          escape(str(s.get("accelerator_uuid", "-"))),
                          f"{fmt_gpus_milli(s.get('compute_milli'))} GPU" if s else "-",
                          fmt_mib(s.get("memory_mib")) if s else "-")
    return table


def nodes_table(nodes: list[dict]) -> Table:
    """One row per node: its GPUs by model, what is allocated on them, and when it last spoke."""
    backends = {str(n.get("backend", "-")) for n in nodes}
    one_backend = len(backends) == 1
    table = Table(header_style="bold", caption=f"backend: {backends.pop()}" if one_backend else None,
                  caption_justify="left")
    for col in ("NAME", "STATE", "GPUS", "ALLOCATED", "GPU MEMORY") + (() if one_backend else ("BACKEND",)) + ("SEEN",):
        table.add_column(col, no_wrap=True)
    for n in nodes:
        accs = n.get("accelerators") or []
        models: dict[str, int] = {}
        for a in accs:
            models[a.get("model", "?")] = models.get(a.get("model", "?"), 0) + 1
        gpus = ", ".join(f"{c}x {m}" for m, c in sorted(models.items())) or "none"
        unhealthy = sum(1 for a in accs if a.get("healthy") is False)
        if unhealthy:
            gpus += f" ({unhealthy} unhealthy)"
        alloc = sum(a.get("allocated_milli") or 0 for a in accs)
        mem = sum(a.get("memory_mib") or 0 for a in accs)
        mem_alloc = sum(a.get("allocated_memory_mib") or 0 for a in accs)
        state = str(n.get("state", "?")) + (" (cordoned)" if n.get("cordoned") else "")
        seen = fmt_age(n.get("last_heartbeat_at"))
        row: list[Any] = [escape(str(n.get("name"))),
                          Text(state, style="green" if state == "ready" else "yellow"), escape(gpus),
                          f"{fmt_gpus_milli(alloc)}/{len(accs)}", f"{fmt_gib(mem_alloc)}/{fmt_mib(mem)}"]
        if not one_backend:
            row.append(escape(str(n.get("backend", "-"))))
        row.append(f"{seen} ago" if seen != "-" else "-")
        table.add_row(*row)
    return table


def fmt_gib(mib: float | int | None) -> str:
    """A bare GiB figure for 'used/total' pairs: '40', '0', '19.9'."""
    if not mib:
        return "0"
    gib = mib / 1024
    return f"{gib:.0f}" if gib >= 100 or gib == int(gib) else f"{gib:.1f}"


def capacity_table(cap: dict) -> Table:
    """GPUs by vendor and model (in GPUs: 1 = 1000 milli): allocated, in use, free, memory."""
    table = Table(header_style="bold")
    for col in ("MODEL", "GPUS", "ALLOCATED", "IN USE", "FREE", "GPU MEMORY"):
        table.add_column(col, no_wrap=True)
    for r in cap.get("by_model") or []:
        table.add_row(*_cap_row(r, escape(f"{r.get('vendor', '-')} {r.get('model', '-')}")))
    totals = cap.get("totals")
    if totals:
        table.add_section()
        table.add_row(*_cap_row(totals, Text("total", style="bold")))
    return table


def _cap_row(r: dict, label: Any) -> list[Any]:
    milli = r.get("gpu_milli") or 0
    alloc = r.get("allocated_milli") or 0
    pct = f" ({alloc * 100 / milli:.0f}%)" if milli else ""
    return [label, str(r.get("accelerators", "-")), f"{fmt_gpus_milli(alloc)}{pct}",
            fmt_gpus_milli(r.get("in_use_milli")), fmt_gpus_milli(milli - alloc),
            f"{fmt_gib(r.get('allocated_memory_mib'))}/{fmt_mib(r.get('memory_mib'))}"]


def queues_table(queues: list[dict]) -> Table:
    """Quota and use per queue, in GPUs (1 = 1000 compute milli)."""
    table = Table(header_style="bold", caption="figures in GPUs (1 = 1000 compute milli)",
                  caption_justify="left")
    for col in ("QUEUE", "TEAM", "GUARANTEE", "LIMIT", "WEIGHT", "IN USE", "RUNNING", "PENDING"):
        table.add_column(col, no_wrap=True)
    for q in queues:
        limit = q.get("limit_milli")
        table.add_row(escape(str(q.get("name"))), escape(str(q.get("team"))),
                      fmt_gpus_milli(q.get("guarantee_milli") or 0),
                      "none" if limit is None else fmt_gpus_milli(limit),
                      str(q.get("weight", 1)), fmt_gpus_milli(q.get("allocated_milli") or 0),
                      str(q.get("running_jobs", 0)), str(q.get("pending_jobs", 0)))
    return table
