"""Snapshot <-> JSON, so a production decision can be replayed offline (`schedule(load(...))`)."""

from __future__ import annotations

import json
from dataclasses import asdict

from controlplane.core.resources import Accelerator, Constraints, Node, Request, SliceGrant
from controlplane.core.snapshot import MemberPlacement, PendingJob, Queue, RunningJob, Snapshot


def dumps(snapshot: Snapshot) -> str:
    return json.dumps(asdict(snapshot), sort_keys=True)


def _request(d: dict) -> Request:
    c = d.get("constraints") or {}
    constraints = Constraints(c.get("vendor"), tuple(c.get("models") or ()), c.get("min_memory_mib", 0),
                              tuple(tuple(x) for x in c.get("labels") or ()))
    return Request(**{**d, "constraints": constraints})


def _members(items: list[dict]) -> tuple[MemberPlacement, ...]:
    return tuple(MemberPlacement(**{**m, "slices": tuple(SliceGrant(**s) for s in m["slices"])})
                 for m in items)


def loads(text: str) -> Snapshot:
    """The Snapshot ``dumps`` wrote (raises ValueError naming the bad part)."""
    try:
        d = json.loads(text)
        nodes = [Node(**{**n, "accelerators": [Accelerator(**a) for a in n["accelerators"]]})
                 for n in d["nodes"]]
        queues = [Queue(**{**q, "model_guarantees_milli": tuple(tuple(x) for x in q["model_guarantees_milli"])})
                  for q in d.get("queues", [])]
        pending = [PendingJob(**{**j, "request": _request(j["request"])}) for j in d.get("pending", [])]
        running = [RunningJob(**{**j, "request": _request(j["request"]), "members": _members(j["members"])})
                   for j in d.get("running", [])]
    except (KeyError, TypeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not a scheduler snapshot dump: {exc}") from None
    return Snapshot(nodes, queues, pending, running, d.get("now", 0.0))
