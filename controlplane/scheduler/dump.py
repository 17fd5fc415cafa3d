"""Scheduler dumps: a cycle's snapshot, config and (optionally) the decision it made, as JSON.

``schedule`` is pure, so ``schedule(*load_dump(d)[:2])`` decides exactly what the loop decided:
``gpupool bench replay FILE`` replays a dump and lists any difference. Every value is plain
JSON (floats round-trip exactly); a malformed dump raises ``DumpError`` naming the bad part.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from controlplane.core.requests import request_from_json, request_to_json
from controlplane.core.resources import Accelerator, Node, SliceGrant
from controlplane.core.snapshot import (
    Decision, MemberPlacement, PendingJob, PendingReason, Placement, Preemption, Queue, RunningJob,
    Snapshot,
)
from controlplane.scheduler.config import SchedulerConfig
from controlplane.scheduler.frag import TaskShape

FORMAT = "gpupool-scheduler-dump/1"


class DumpError(ValueError):
    """A dump that cannot be read; the message names the part."""


# ---- to JSON ------------------------------------------------------------------------------------
def _accelerator(a: Accelerator) -> dict:
    return {"uuid": a.uuid, "node": a.node, "index": a.index, "vendor": a.vendor, "model": a.model,
            "memory_mib": a.memory_mib, "labels": dict(a.labels), "numa_node": a.numa_node,
            "interconnect_domain": a.interconnect_domain, "healthy": a.healthy,
            "allocated_milli": a.allocated_milli, "allocated_memory_mib": a.allocated_memory_mib,
            "unmanaged_memory_mib": a.unmanaged_memory_mib}


def _node(n: Node) -> dict:
    return {"name": n.name, "cpu_milli": n.cpu_milli, "memory_mib": n.memory_mib,
            "labels": dict(n.labels), "cordoned": n.cordoned, "ready": n.ready,
            "allocated_cpu_milli": n.allocated_cpu_milli,
            "allocated_memory_mib": n.allocated_memory_mib,
            "accelerators": [_accelerator(a) for a in n.accelerators]}


def _members(members: tuple[MemberPlacement, ...]) -> list[dict]:
    return [{"rank": m.rank, "node": m.node, "cpu_milli": m.cpu_milli, "memory_mib": m.memory_mib,
             "slices": [[s.accelerator_uuid, s.compute_milli, s.memory_mib] for s in m.slices]}
            for m in members]


def snapshot_to_json(s: Snapshot) -> dict:
    return {
        "now": s.now, "nodes": [_node(n) for n in s.nodes],
        "queues": [{"name": q.name, "team": q.team, "guarantee_milli": q.guarantee_milli,
                    "limit_milli": q.limit_milli, "weight": q.weight,
                    "model_guarantees_milli": [list(x) for x in q.model_guarantees_milli],
                    "memory_guarantee_mib": q.memory_guarantee_mib, "memory_limit_mib": q.memory_limit_mib}
                   for q in s.queues],
        "pending": [{"job_id": j.job_id, "queue": j.queue, "request": request_to_json(j.request),
                     "priority": j.priority, "submitted_seq": j.submitted_seq,
                     "preemptible": j.preemptible, "max_runtime_s": j.max_runtime_s}
                    for j in s.pending],
        "running": [{"job_id": j.job_id, "queue": j.queue, "request": request_to_json(j.request),
                     "members": _members(j.members), "priority": j.priority,
                     "started_at": j.started_at, "min_runtime_s": j.min_runtime_s,
                     "preemptible": j.preemptible, "max_runtime_s": j.max_runtime_s}
                    for j in s.running],
    }


def config_to_json(c: SchedulerConfig) -> dict:
    return {"policy": c.policy, "weights": None if c.weights is None else dict(c.weights),
            "preemption": c.preemption, "backfill": c.backfill,
            "max_reservations": c.max_reservations,
            "max_preemption_attempts": c.max_preemption_attempts,
            "workload": [{"cpu_milli": t.cpu_milli, "num_gpu": t.num_gpu, "gpu_milli": t.gpu_milli,
                          "models": list(t.models), "memory_mib": t.memory_mib}
                         for t in c.workload]}


def decision_to_json(d: Decision) -> dict:
    """A Decision as plain JSON (placements, preemptions, every pending reason)."""
    return {
        "placements": [{"job_id": p.job_id, "members": _members(p.members),
                        "preempts": list(p.preempts)} for p in d.placements],
        "preemptions": [{"job_id": p.job_id, "reason": p.reason, "for_job_id": p.for_job_id}
                        for p in d.preemptions],
        "pending": {job: {"code": str(r.code), "message": r.message, "details": r.details,
                          "unschedulable": r.unschedulable} for job, r in d.pending.items()},
    }


def dump_snapshot(snapshot: Snapshot, config: SchedulerConfig,
                  decision: Decision | None = None) -> dict:
    """Everything needed to replay one cycle offline (and what it decided, when given)."""
    return {"format": FORMAT, "snapshot": snapshot_to_json(snapshot),
            "config": config_to_json(config),
            "decision": None if decision is None else decision_to_json(decision)}


# ---- from JSON ----------------------------------------------------------------------------------
def _read(where: str, build: Callable[[], Any]) -> Any:
    try:
        return build()
    except DumpError:
        raise
    except KeyError as exc:
        raise DumpError(f"{where}: missing {exc}") from None
    except (TypeError, ValueError, AttributeError) as exc:
        raise DumpError(f"{where}: {exc}") from None


def _members_from(items: list, where: str) -> tuple[MemberPlacement, ...]:
    return tuple(_read(f"{where}.members[{i}]", lambda m=m: MemberPlacement(
        int(m["rank"]), str(m["node"]), tuple(SliceGrant(str(u), int(c), int(b)) for u, c, b in m["slices"]),
        int(m["cpu_milli"]), int(m["memory_mib"]))) for i, m in enumerate(items))


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


def snapshot_from_json(d: dict) -> Snapshot:
    nodes = [_read(f"snapshot.nodes[{i}]", lambda n=n: Node(
        str(n["name"]), int(n["cpu_milli"]), int(n["memory_mib"]),
        [Accelerator(**a) for a in n["accelerators"]], dict(n["labels"]), bool(n["cordoned"]),
        bool(n["ready"]), int(n["allocated_cpu_milli"]), int(n["allocated_memory_mib"])))
        for i, n in enumerate(d["nodes"])]
    queues = [_read(f"snapshot.queues[{i}]", lambda q=q: Queue(
        str(q["name"]), str(q["team"]), int(q["guarantee_milli"]),
        None if q["limit_milli"] is None else int(q["limit_milli"]), float(q["weight"]),
        tuple((str(m), int(v)) for m, v in q["model_guarantees_milli"]),
        _opt_int(q.get("memory_guarantee_mib")), _opt_int(q.get("memory_limit_mib"))))
        for i, q in enumerate(d["queues"])]
    pending = [_read(f"snapshot.pending[{i}]", lambda j=j: PendingJob(
        str(j["job_id"]), str(j["queue"]), request_from_json(j["request"]), int(j["priority"]),
        int(j["submitted_seq"]), bool(j["preemptible"]), _opt_float(j["max_runtime_s"])))
        for i, j in enumerate(d["pending"])]
    running = [_read(f"snapshot.running[{i}]", lambda j=j, i=i: RunningJob(
        str(j["job_id"]), str(j["queue"]), request_from_json(j["request"]),
        _members_from(j["members"], f"snapshot.running[{i}]"), int(j["priority"]),
        float(j["started_at"]), float(j["min_runtime_s"]), bool(j["preemptible"]),
        _opt_float(j["max_runtime_s"])))
        for i, j in enumerate(d["running"])]
    return Snapshot(nodes, queues, pending, running, float(d["now"]))


def config_from_json(c: dict) -> SchedulerConfig:
    weights = c["weights"]
    return SchedulerConfig(
        policy=str(c["policy"]),
        weights=None if weights is None else {str(k): float(v) for k, v in weights.items()},
        preemption=bool(c["preemption"]), backfill=bool(c["backfill"]),
        max_reservations=int(c["max_reservations"]),
        max_preemption_attempts=int(c["max_preemption_attempts"]),
        workload=tuple(TaskShape(int(t["cpu_milli"]), int(t["num_gpu"]), int(t["gpu_milli"]),
                                 tuple(t["models"]), int(t["memory_mib"])) for t in c["workload"]))


def decision_from_json(d: dict) -> Decision:
    return Decision(
        placements=[_read(f"decision.placements[{i}]", lambda p=p, i=i: Placement(
            str(p["job_id"]), _members_from(p["members"], f"decision.placements[{i}]"),
            tuple(p["preempts"]))) for i, p in enumerate(d["placements"])],
        preemptions=[_read(f"decision.preemptions[{i}]", lambda p=p: Preemption(
            str(p["job_id"]), str(p["reason"]), p["for_job_id"]))
            for i, p in enumerate(d["preemptions"])],
        pending={str(job): _read(f"decision.pending[{job}]", lambda r=r: PendingReason(
            r["code"], str(r["message"]), dict(r["details"]), bool(r["unschedulable"])))
            for job, r in d["pending"].items()})


def load_dump(data: dict) -> tuple[Snapshot, SchedulerConfig, Decision | None]:
    """The snapshot, config and recorded decision (None if it has none) of a dump."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise DumpError(f"not a scheduler dump: format is {found!r}, expected {FORMAT!r}")
    snapshot = _read("snapshot", lambda: snapshot_from_json(data["snapshot"]))
    config = _read("config", lambda: config_from_json(data["config"]))
    recorded = data.get("decision")
    decision = None if recorded is None else _read("decision", lambda: decision_from_json(recorded))
    return snapshot, config, decision


def differences(expected: Decision, got: Decision, limit: int = 20) -> list[str]:
    """Readable differences between two decisions (empty: identical), at most ``limit``."""
    want, have = decision_to_json(expected), decision_to_json(got)
    out: list[str] = []
    for part in ("placements", "preemptions"):
        a = {x["job_id"]: x for x in want[part]}
        b = {x["job_id"]: x for x in have[part]}
        for job in sorted(a.keys() | b.keys()):
            if job not in b:
                out.append(f"{part}: job {job} was in the recorded decision, not in the replay")
            elif job not in a:
                out.append(f"{part}: job {job} is in the replay, not in the recorded decision")
            elif a[job] != b[job]:
                out.append(f"{part}: job {job}: recorded {a[job]}, replayed {b[job]}")
        if [x["job_id"] for x in want[part]] != [x["job_id"] for x in have[part]] and not out:
            out.append(f"{part}: same jobs in another order")
    a, b = want["pending"], have["pending"]
    for job in sorted(a.keys() | b.keys()):
        if a.get(job) != b.get(job):
            out.append(f"pending: job {job}: recorded {a.get(job)}, replayed {b.get(job)}")
    return out[:limit] + ([f"... and {len(out) - limit} more"] if len(out) > limit else [])
