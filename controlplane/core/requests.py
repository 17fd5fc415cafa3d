"""Scheduler Requests from a spec's ``resources`` block, and the stored (JSON) form of a Request.

The control plane derives a job's Request once, at submit, and stores it next to the spec; the
scheduler reads it back with ``request_from_json`` and never parses a spec again.
"""

from __future__ import annotations

from collections.abc import Mapping

from controlplane.core.resources import WHOLE, Constraints, Request


def request_from_resources(res: Mapping) -> Request:
    """The Request of a validated ``resources`` mapping (``gpu: 0.25`` a quarter, ``gpu: 2`` two)."""
    gpu = float(res.get("gpu", 0) or 0)
    whole = int(gpu) if gpu >= 1 else 0
    milli = 0 if whole else round(gpu * WHOLE)
    memory = int(res.get("gpu_memory_mib", 0) or 0)
    if not whole and not milli and memory:
        milli = 1  # a memory-only slice still takes a sliver of compute
    return Request(
        cpu_milli=int(res.get("cpu_milli", 0) or 0),
        memory_mib=int(res.get("memory_mib", 0) or 0),
        gpus=whole,
        gpu_milli=milli,
        gpu_memory_mib=memory if not whole else 0,
        constraints=Constraints(
            vendor=res.get("vendor"),
            models=tuple(res.get("models") or ()),
            min_memory_mib=int(res.get("min_gpu_memory_mib", 0) or 0),
            labels=tuple(sorted((res.get("labels") or {}).items())),
        ),
        gang=int(res.get("nodes", 1) or 1),
    )


def request_to_json(req: Request) -> dict:
    """A Request as the JSON stored on the job row."""
    c = req.constraints
    return {"cpu_milli": req.cpu_milli, "memory_mib": req.memory_mib, "gpus": req.gpus,
            "gpu_milli": req.gpu_milli, "gpu_memory_mib": req.gpu_memory_mib, "gang": req.gang,
            "constraints": {"vendor": c.vendor, "models": list(c.models),
                            "min_memory_mib": c.min_memory_mib, "labels": dict(c.labels)}}


def request_from_json(data: Mapping) -> Request:
    """The Request stored by ``request_to_json``."""
    c = data.get("constraints") or {}
    return Request(cpu_milli=int(data["cpu_milli"]), memory_mib=int(data["memory_mib"]),
                   gpus=int(data["gpus"]), gpu_milli=int(data["gpu_milli"]),
                   gpu_memory_mib=int(data["gpu_memory_mib"]), gang=int(data["gang"]),
                   constraints=Constraints(vendor=c.get("vendor"), models=tuple(c.get("models") or ()),
                                           min_memory_mib=int(c.get("min_memory_mib", 0)),
                                           labels=tuple(sorted((c.get("labels") or {}).items()))))
