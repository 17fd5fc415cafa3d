"""Chart specs (for static/app.js) from a job's usage and from a chargeback report: plain dicts in,
plain dicts out, summed over the job's slices per bucket."""

from __future__ import annotations

from datetime import datetime


def _epoch(ts: str | datetime) -> float:
    if isinstance(ts, datetime):
        return ts.timestamp()
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def job_charts(usage: dict) -> dict[str, dict]:
    """{"compute": spec in GPUs, "memory": spec in GiB}: allocated vs used, all slices together."""
    rows: dict[float, list[float]] = {}  # ts -> [alloc GPU, used mean, used p95, alloc GiB, mean GiB, max GiB]
    for sl in usage["slices"]:
        for p in sl["points"]:
            r = rows.setdefault(_epoch(p["ts"]), [0.0] * 6)
            r[0] += sl["compute_milli"] / 1000
            r[1] += (p["util_mean_pct"] or 0.0) / 100
            r[2] += (p["util_p95_pct"] or 0.0) / 100
            r[3] += sl["memory_mib"] / 1024
            r[4] += p["memory_mean_mib"] / 1024
            r[5] += p["memory_max_mib"] / 1024
    ts = sorted(rows)
    empty = "No usage yet: the agents' samples are stored once a minute while the job runs."
    if not ts:
        return {"compute": {"empty": empty}, "memory": {"empty": empty}}

    def col(i: int) -> list[float]:
        return [round(rows[t][i], 4) for t in ts]

    return {"compute": {"ts": ts, "unit": "GPUs", "series": [
                {"label": "allocated", "color": "#9aa3b5", "values": col(0)},
                {"label": "used (mean)", "color": "#3b6ef5", "fill": "rgba(59,110,245,.08)", "values": col(1)},
                {"label": "used (p95)", "color": "#7b5cf0", "values": col(2)}]},
            "memory": {"ts": ts, "unit": "GiB", "series": [
                {"label": "allocated", "color": "#9aa3b5", "values": col(3)},
                {"label": "used (mean)", "color": "#1f9d6b", "fill": "rgba(31,157,107,.08)", "values": col(4)},
                {"label": "used (max)", "color": "#d98a00", "values": col(5)}]}}


def report_chart(report: dict) -> dict:
    """The report's timeline: mean GPUs allocated (slices with telemetry) and used per step."""
    line = report.get("timeline") or {}
    if not line.get("ts"):
        return {"empty": "No usage samples in this range."}
    return {"ts": line["ts"], "unit": "GPUs", "series": [
        {"label": "allocated", "color": "#9aa3b5", "values": [round(v, 4) for v in line["allocated_gpus"]]},
        {"label": "used", "color": "#3b6ef5", "fill": "rgba(59,110,245,.08)",
         "values": [round(v, 4) for v in line["used_gpus"]]}]}
