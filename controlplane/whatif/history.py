"""The pool's own job history as a what-if workload: one JSON object per line (JSONL).

Each line is one job that started (finished or still running)::

    {"id": "42", "submitted_at": "2026-11-30T10:00:00Z", "run_s": 3600,
     "request": {"gpus": 0, "gpu_milli": 500, "gpu_memory_mib": 20480, "cpu_milli": 4000,
                 "memory_mib": 16384, "gang": 1, "models": ["H100-80GB"]},
     "usage": {"compute_mean_pct": 8.1, "compute_p95_pct": 27.0, "memory_mean_mib": 30100,
               "memory_peak_mib": 38200, "minutes": 60}}

- ``submitted_at``: ISO 8601 (with a zone) or Unix seconds; ``run_s``: seconds it ran once
  started (so far, for a running job).
- ``request``: per gang member, as the scheduler takes it: ``gpus`` whole accelerators, or a
  fraction (``gpu_milli`` 1-999 and/or ``gpu_memory_mib``; memory 0 = proportional).
  Missing keys are 0 (``gang``: 1, ``models``: any).
- ``usage`` (optional): per accelerator, as ``rightsize.basis_of`` summarises the per-minute
  series: p95 over minutes of the per-minute p95 compute (% of the device), peak memory
  (MiB), means, and the number of minutes. Without it a job keeps its request when
  right-sized and counts as using nothing.
Blank lines are skipped; any other bad line is an error naming the file, line and field.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from controlplane.core.resources import WHOLE, Constraints, Request
from controlplane.whatif.rightsize import UsageBasis
from controlplane.whatif.workload import Job, Workload, WorkloadError, load_nodes

REQUEST_KEYS = ("gpus", "gpu_milli", "gpu_memory_mib", "cpu_milli", "memory_mib", "gang")
USAGE_KEYS = ("compute_mean_pct", "compute_p95_pct", "memory_mean_mib", "memory_peak_mib", "minutes")


def _when(value: object, where: str) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            moment = None
        if moment is not None and moment.tzinfo is not None:
            return moment.timestamp()
    raise WorkloadError(f"{where}: submitted_at must be Unix seconds or ISO 8601 with a zone "
                        f"(got {value!r})")


def _count(obj: dict, key: str, where: str, default: float = 0) -> float:
    value = obj.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise WorkloadError(f"{where}: {key} must be a number >= 0 (got {value!r})")
    return value


def _request(obj: object, where: str) -> Request:
    if not isinstance(obj, dict):
        raise WorkloadError(f"{where}: request must be an object")
    v = {k: int(_count(obj, k, f"{where}: request", 1 if k == "gang" else 0)) for k in REQUEST_KEYS}
    models = obj.get("models") or []
    if not isinstance(models, list) or not all(isinstance(m, str) for m in models):
        raise WorkloadError(f"{where}: request.models must be a list of model names")
    if v["gang"] < 1:
        raise WorkloadError(f"{where}: request.gang must be at least 1")
    if v["gpu_milli"] > WHOLE:
        raise WorkloadError(f"{where}: request.gpu_milli {v['gpu_milli']} is above {WHOLE}")
    if v["gpus"] and (v["gpu_milli"] not in (0, WHOLE) or v["gpu_memory_mib"]):
        raise WorkloadError(f"{where}: request asks for whole gpus and a fraction; give one")
    milli = 0 if v["gpus"] else v["gpu_milli"]
    return Request(v["cpu_milli"], v["memory_mib"], gpus=v["gpus"], gpu_milli=milli,
                   gpu_memory_mib=v["gpu_memory_mib"], constraints=Constraints(models=tuple(models)),
                   gang=v["gang"])


def _usage(obj: object, where: str) -> UsageBasis | None:
    if obj is None:
        return None
    if not isinstance(obj, dict):
        raise WorkloadError(f"{where}: usage must be an object")
    missing = [k for k in USAGE_KEYS if k not in obj]
    if missing:
        raise WorkloadError(f"{where}: usage lacks {', '.join(missing)}")
    v = {k: _count(obj, k, f"{where}: usage") for k in USAGE_KEYS}
    return UsageBasis(v["compute_mean_pct"], v["compute_p95_pct"], v["memory_mean_mib"],
                      v["memory_peak_mib"], int(v["minutes"]))


def load_history(path: str | Path, nodes: str | Path) -> Workload:
    """Jobs of a history JSONL file on the nodes of ``nodes`` (CSV, see ``load_nodes``)."""
    p = Path(path)
    if not p.is_file():
        raise WorkloadError(f"{p}: no such file")
    jobs, excluded = [], {"cpu_only": 0}
    for number, text in enumerate(p.read_text().splitlines(), start=1):
        if not text.strip():
            continue
        where = f"{p}: line {number}"
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise WorkloadError(f"{where}: not JSON ({exc.msg})") from None
        if not isinstance(obj, dict):
            raise WorkloadError(f"{where}: each line must be a JSON object")
        for key in ("id", "submitted_at", "run_s", "request"):
            if key not in obj:
                raise WorkloadError(f"{where}: missing {key}")
        req = _request(obj["request"], where)
        if not (req.gpus or req.gpu_milli or req.gpu_memory_mib):
            excluded["cpu_only"] += 1
            continue
        jobs.append(Job(str(obj["id"]), _when(obj["submitted_at"], where),
                        _count(obj, "run_s", where), req, _usage(obj.get("usage"), where)))
    if not jobs:
        raise WorkloadError(f"{p}: no job with a GPU request")
    start = min(j.submit_s for j in jobs)
    jobs = sorted((Job(j.job_id, j.submit_s - start, j.run_s, j.request, j.usage) for j in jobs),
                  key=lambda j: (j.submit_s, j.job_id))
    return Workload(p.stem, jobs, load_nodes(nodes), excluded)
