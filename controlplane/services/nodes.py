"""Nodes and accelerators: agent registration and heartbeats, admin cordon/drain, capacity."""

from __future__ import annotations

import re
import time
from collections import Counter

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from controlplane.core import wire
from controlplane.db.base import db_clock, now
from controlplane.db.database import Database, retry_deadlocks
from controlplane.core.states import NodeState, Role, StopKind
from controlplane.db.models import (AcceleratorRow, JobRow, MemberRow, NodeRow, SampleRow,
                                    StatusSeenRow, TokenRow)
from controlplane.services import auth, events, health, lifecycle, usage_buffer
from controlplane.services.auth import forget_cached_tokens, hash_token, new_secret, remember_token
from controlplane.services.principal import Principal
from controlplane.services.errors import MAX_INT, Conflict, Forbidden, Invalid, NotFound
from controlplane.services.serialize import iso


DNS_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
DNS_SUBDOMAIN = re.compile(rf"{DNS_LABEL}(\.{DNS_LABEL})*")


def check_hostname(name: str) -> None:
    """A node name is a DNS-1123 subdomain (as Kubernetes node names are), else a 422 saying why."""
    problem = None
    if not name or len(name) > 253:
        problem = "must be 1 to 253 characters"
    elif DNS_SUBDOMAIN.fullmatch(name) is None:
        problem = ("must be lowercase letters, digits, '-' and '.', each dot-separated part starting and "
                   "ending with a letter or digit")
    elif max(len(label) for label in name.split(".")) > 63:
        problem = "each dot-separated part must be at most 63 characters"
    if problem:
        raise Invalid("node.hostname", f"{name[:300]!r} is not a valid node name (a DNS-1123 subdomain): "
                                       f"{problem}; start the agent with --node-name NAME")


def _may_register(s: Session, who: Principal, node: NodeRow | None, hostname: str) -> None:
    """New nodes: a bootstrap token (within its rules) or an admin. Existing ones: that node's own
    token or an admin; a bootstrap token never takes over a registered name (409)."""
    if who.role == Role.BOOTSTRAP:
        auth.use_bootstrap_token(s, who, hostname, consume=node is None)
        if node is not None:
            raise Conflict(f"node {hostname!r} is already registered; re-register it with its own node token "
                           "(the agent keeps it in its state directory) or an admin token")
    elif who.role == Role.AGENT:
        if node is None or node.id != who.node_id:
            raise Forbidden(f"this node token belongs to node {who.node!r}; it cannot register {hostname!r}")
    elif who.role != Role.ADMIN:
        raise Forbidden("registering a node needs a bootstrap token, its node token or an admin token")


def _claim_accelerators(s: Session, node: NodeRow, accs: list[wire.AcceleratorInfo]) -> set[int]:
    """Add or refresh the node's accelerators; an accelerator of another node that is alive or
    still holds slices is a 409 (never moved with its live slices). Returns nodes it moved from."""
    dup = sorted(u for u, n in Counter(a.uuid for a in accs).items() if n > 1)
    if dup:
        raise Invalid("accelerators", f"accelerator uuid(s) listed twice: {dup}")
    moved_from: set[int] = set()
    for acc in accs:
        row = s.get(AcceleratorRow, acc.uuid)
        fields = dict(node_id=node.id, index=acc.index, vendor=acc.vendor, model=acc.model,
                      product_name=acc.name, compute_capability=acc.compute_capability,
                      numa_node=acc.numa_node, interconnect_domain=acc.interconnect_domain,
                      labels=acc.labels)
        if row is None:
            s.add(AcceleratorRow(uuid=acc.uuid, memory_mib=acc.memory_mib, allocated_milli=0,
                                 allocated_memory_mib=0, healthy=True, **fields))
            continue
        if row.node_id != node.id:
            owner = s.get(NodeRow, row.node_id)
            owner_name = owner.name if owner is not None else f"#{row.node_id}"
            live = owner is not None and owner.state != NodeState.NOT_READY.value
            if live or row.allocated_milli or row.allocated_memory_mib:
                why = f"live node {owner_name!r}" if live else f"node {owner_name!r}, with live slices"
                raise Conflict(f"accelerator {acc.uuid} belongs to {why}; it cannot move to {node.name!r}")
            moved_from.add(row.node_id)
        for k, v in fields.items():  # health is kept: a cordoned GPU stays cordoned until an admin clears it
            setattr(row, k, v)
        if acc.memory_mib >= row.allocated_memory_mib:
            row.memory_mib = acc.memory_mib
    return moved_from


@retry_deadlocks
def register(db: Database, who: Principal, req: wire.RegisterRequest, heartbeat_interval_s: float, *,
             cordon_node_after: int = 2) -> wire.RegisterResponse:
    """Create or refresh the node and its accelerators; returns a fresh node token (the node's
    earlier tokens are revoked). Accelerators missing from a re-registration are cordoned."""
    if req.protocol != wire.PROTOCOL_VERSION:
        raise Invalid("protocol", f"server speaks protocol {wire.PROTOCOL_VERSION}, agent sent {req.protocol}")
    info = req.node
    check_hostname(info.hostname)
    for field in ("cpu_milli", "memory_mib"):
        if not 0 <= getattr(info, field) <= 2**53:
            raise Invalid(f"node.{field}", "out of range")
    for i, acc in enumerate(req.accelerators):
        if not 0 < acc.memory_mib <= MAX_INT * 16:
            raise Invalid(f"accelerators.{i}.memory_mib", "must be positive")
    token = new_secret("gpn")
    ts = now()
    clock = db_clock(db.engine.dialect.name)
    with db.tx() as s:
        node = s.scalar(select(NodeRow).where(NodeRow.name == info.hostname).with_for_update())
        _may_register(s, who, node, info.hostname)
        if node is None:
            node = NodeRow(name=info.hostname, state=NodeState.READY.value, cordoned=False, epoch=1,
                           registered_at=ts, address=info.address, cpu_milli=info.cpu_milli,
                           memory_mib=info.memory_mib, labels=info.labels, backend=info.backend,
                           agent_version=info.agent_version, last_heartbeat_at=clock)
            s.add(node)
            s.flush()
            kind = "node_registered"
        else:
            node.address, node.cpu_milli, node.memory_mib = info.address, info.cpu_milli, info.memory_mib
            node.labels, node.backend, node.agent_version = info.labels, info.backend, info.agent_version
            node.last_heartbeat_at = clock
            node.epoch += 1
            # a lost node stays not_ready until a heartbeat lists no copy it was not given
            s.execute(update(TokenRow).where(TokenRow.node_id == node.id, TokenRow.kind == "node")
                      .values(revoked=True))
            # an agent that lost its state restarts its seq at 1; replays are harmless anyway
            # (a report for a rank that already exited is a no-op)
            s.execute(delete(StatusSeenRow).where(StatusSeenRow.node_id == node.id))
            kind = "node_reregistered"
        moved_from = _claim_accelerators(s, node, req.accelerators)
        s.flush()
        seen = {a.uuid for a in req.accelerators}
        missing = [u for u in s.scalars(select(AcceleratorRow.uuid).where(AcceleratorRow.node_id == node.id))
                   if u not in seen]
        if missing:  # vanished from the node: cordoned, its jobs requeued
            health.cordon_accelerators(s, node, dict.fromkeys(missing, health.MISSING), who.actor,
                                       cordon_node_after=cordon_node_after)
        tok = TokenRow(token_hash=hash_token(token), kind="node", name=f"node {info.hostname}",
                       node_id=node.id, created_at=ts)
        s.add(tok)
        s.flush()
        token_id = tok.id
        events.record(s, kind, "node", info.hostname, who.actor, node_id=node.id,
                      data={"accelerators": len(req.accelerators), "backend": info.backend})
        node_id = node.id
    for n in (node_id, *moved_from):
        db.cache.pop(("accs", n), None)
    if kind == "node_reregistered":
        forget_cached_tokens(db)  # its previous tokens were revoked
    remember_token(db, token, Principal(Role.AGENT, token_id, node_id=node_id, node=info.hostname))
    return wire.RegisterResponse(node_id=str(node_id), node_token=token,
                                 heartbeat_interval_s=heartbeat_interval_s)


def check_node(who: Principal, node_id: str) -> int:
    if str(who.node_id) != str(node_id):
        raise Forbidden(f"this agent token belongs to node {who.node_id}, not {node_id!r}")
    return who.node_id  # type: ignore[return-value]


def heartbeat(db: Database, who: Principal, hb: wire.Heartbeat, interval_s: float, *,
              cordon_node_after: int = 2) -> wire.HeartbeatResponse:
    """Mark the node alive, store its samples, and cordon accelerators whose newest sample is
    unhealthy (services/health.py)."""
    newest = _record_heartbeat(db, who, hb)
    health.check_samples(db, who, who.node_id, newest, cordon_node_after=cordon_node_after)
    usage_buffer.record(db, who.node_id, hb.slice_usage, now())  # in memory; the loops write it per minute
    return wire.HeartbeatResponse(heartbeat_interval_s=interval_s)


@retry_deadlocks
def _record_heartbeat(db: Database, who: Principal, hb: wire.Heartbeat) -> list[wire.AcceleratorSample]:
    """Mark the node alive (on the database's clock) and store each accelerator's latest sample;
    returns those samples.

    A node that was lost comes back ready only once its agent runs no attempt it was not given
    (copies the server gave up on and requeued): until then nothing new is placed on its GPUs.
    """
    node_id = check_node(who, hb.node_id)
    ts = now()
    clock = db_clock(db.engine.dialect.name)
    with db.tx() as s:
        alive = s.execute(update(NodeRow).where(NodeRow.id == node_id, NodeRow.state != NodeState.NOT_READY.value)
                          .values(last_heartbeat_at=clock))
        if not alive.rowcount:  # it was not_ready: it is back, once its stale copies are gone
            stale = _stale_attempts(s, node_id, hb.running_attempts)
            values = {"last_heartbeat_at": clock}
            if not stale:
                values["state"] = NodeState.READY.value
            done = s.execute(update(NodeRow).where(NodeRow.id == node_id,
                                                   NodeRow.state == NodeState.NOT_READY.value).values(**values))
            if done.rowcount and not stale:
                events.record(s, "node_ready", "node", who.node, who.actor, node_id=node_id,
                              reason="heartbeats resumed")
        mine = _node_uuids(db, s, node_id)
        newest: dict[str, wire.AcceleratorSample] = {}  # agents may send several samples per device
        for x in hb.samples:
            if x.uuid in mine and (x.uuid not in newest or x.ts >= newest[x.uuid].ts):
                newest[x.uuid] = x
        # each accelerator's own health (one failing GPU must not make its neighbours unhealthy)
        rows = [{"uuid": x.uuid, "node_id": node_id, "ts": ts, "telemetry": x.model_dump(mode="json"),
                 "healthy": bool(x.healthy), "gpu_util_pct": _finite(x.gpu_util_pct),
                 "unmanaged_memory_mib": int(max(0.0, min(_finite(x.unmanaged_memory_mib) or 0, 2**40)))}
                for x in newest.values()]
        if rows:
            s.connection().execute(_upsert_statement(db), rows)
    return list(newest.values())


def _stale_attempts(s: Session, node_id: int, running: list[str]) -> list[str]:
    """Attempts the agent still runs that have no live member on this node any more."""
    ids = [int(a) for a in running if a.isascii() and a.isdigit() and len(a) < 19]
    live = set(s.scalars(select(MemberRow.attempt_id).where(
        MemberRow.node_id == node_id, MemberRow.attempt_id.in_(ids), MemberRow.state.in_(lifecycle.LIVE))))
    return [a for a in running if not (a.isascii() and a.isdigit() and len(a) < 19 and int(a) in live)]


def _finite(v: float | None) -> float | None:
    return v if v is None or (v == v and abs(v) < 1e18) else None


def _node_uuids(db: Database, s: Session, node_id: int) -> set[str]:
    key = ("accs", node_id)
    hit = db.cache.get(key)
    if hit and hit[1] > time.monotonic():
        return hit[0]
    uuids = set(s.scalars(select(AcceleratorRow.uuid).where(AcceleratorRow.node_id == node_id)))
    db.cache[key] = (uuids, time.monotonic() + 30.0)
    return uuids


def _upsert_statement(db: Database):  # noqa: ANN202
    """INSERT .. ON CONFLICT DO UPDATE for samples, built once per database (executemany'd)."""
    stmt = db.cache.get(("sample-upsert",))
    if stmt is None:
        if db.is_postgres:
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        base = insert(SampleRow.__table__)
        cols = ("node_id", "ts", "telemetry", "healthy", "gpu_util_pct", "unmanaged_memory_mib")
        stmt = base.on_conflict_do_update(index_elements=["uuid"],
                                          set_={c: getattr(base.excluded, c) for c in cols})
        db.cache[("sample-upsert",)] = stmt
    return stmt


def samples_by_uuid(s: Session, node_ids: list[int] | None = None) -> dict[str, SampleRow]:
    q = select(SampleRow)
    if node_ids is not None:
        q = q.where(SampleRow.node_id.in_(node_ids))
    return {x.uuid: x for x in s.scalars(q)}


def accelerator_dict(a: AcceleratorRow, sample: SampleRow | None = None) -> dict:
    return {"uuid": a.uuid, "index": a.index, "vendor": a.vendor, "model": a.model,
            "memory_mib": a.memory_mib, "healthy": a.healthy and (sample is None or sample.healthy),
            "allocated_milli": a.allocated_milli, "allocated_memory_mib": a.allocated_memory_mib,
            "telemetry": sample.telemetry if sample else None, "unhealthy_reason": a.unhealthy_reason,
            "unhealthy_since": iso(a.unhealthy_since)}


def node_dict(n: NodeRow, accs: list[AcceleratorRow], samples: dict | None = None) -> dict:
    return {"id": str(n.id), "name": n.name, "address": n.address, "state": n.state,
            "cordoned": n.cordoned, "health_cordoned": bool(n.health_cordoned), "cpu_milli": n.cpu_milli, "memory_mib": n.memory_mib,
            "labels": n.labels or {}, "backend": n.backend,
            "last_heartbeat_at": iso(n.last_heartbeat_at),
            "accelerators": [accelerator_dict(a, (samples or {}).get(a.uuid))
                             for a in sorted(accs, key=lambda a: a.index)]}


def _accs_by_node(s: Session, node_ids: list[int]) -> dict[int, list[AcceleratorRow]]:
    out: dict[int, list[AcceleratorRow]] = {i: [] for i in node_ids}
    for a in s.scalars(select(AcceleratorRow).where(AcceleratorRow.node_id.in_(node_ids))):
        out.setdefault(a.node_id, []).append(a)
    return out


def list_nodes(db: Database) -> dict:
    with db.read() as s:
        nodes = list(s.scalars(select(NodeRow).order_by(NodeRow.name)))
        accs = _accs_by_node(s, [n.id for n in nodes])
        samples = samples_by_uuid(s)
        return {"items": [node_dict(n, accs[n.id], samples) for n in nodes]}


def _node(s: Session, name: str, *, lock: bool = False) -> NodeRow:
    q = select(NodeRow).where(NodeRow.name == name)
    node = s.scalar(q.with_for_update() if lock else q)
    if node is None:
        raise NotFound(f"no node named {name!r}; see GET /api/v1/nodes")
    return node


def get_node(db: Database, name: str) -> dict:
    with db.read() as s:
        node = _node(s, name)
        return node_dict(node, _accs_by_node(s, [node.id])[node.id], samples_by_uuid(s, [node.id]))


@retry_deadlocks
def set_cordon(db: Database, who: Principal, name: str, *, cordon: bool, drain: bool = False) -> dict:
    """Cordon: no new placements. Drain: cordon and stop its jobs (requeued). Uncordon: undo."""
    with db.tx() as s:
        node = _node(s, name, lock=True)
        node.cordoned, node.health_cordoned = cordon, False  # an admin's cordon is the admin's to lift
        if drain:
            if node.state != NodeState.NOT_READY.value:
                node.state = NodeState.DRAINING.value
        elif not cordon and node.state == NodeState.DRAINING.value:
            node.state = NodeState.READY.value
        kind = "node_drained" if drain else ("node_cordoned" if cordon else "node_uncordoned")
        events.record(s, kind, "node", name, who.actor, node_id=node.id)
        if drain:
            job_ids = set(s.scalars(select(MemberRow.job_id).where(
                MemberRow.node_id == node.id, MemberRow.state.in_(lifecycle.LIVE))))
            for job_id in sorted(job_ids):
                job = s.scalar(select(JobRow).where(JobRow.id == job_id).with_for_update())
                lifecycle.request_stop(s, job, StopKind.PREEMPT, f"node {name} drained by {who.actor}", who.actor)
        s.flush()
        return node_dict(node, _accs_by_node(s, [node.id])[node.id], samples_by_uuid(s, [node.id]))


def list_accelerators(db: Database) -> dict:
    with db.read() as s:
        names = dict(s.execute(select(NodeRow.id, NodeRow.name)).all())
        samples = samples_by_uuid(s)
        rows = s.scalars(select(AcceleratorRow).order_by(AcceleratorRow.node_id, AcceleratorRow.index))
        return {"items": [{**accelerator_dict(a, samples.get(a.uuid)), "node": names.get(a.node_id)}
                          for a in rows]}


def capacity(db: Database) -> dict:
    """Totals and per (vendor, model): size, allocated and in use (from telemetry utilisation)."""
    with db.read() as s:
        rows = list(s.scalars(select(AcceleratorRow)))
        samples = samples_by_uuid(s)
    groups: dict[tuple[str, str], dict] = {}
    totals = {"accelerators": 0, "gpu_milli": 0, "memory_mib": 0, "allocated_milli": 0,
              "allocated_memory_mib": 0, "in_use_milli": 0}
    for a in rows:
        g = groups.setdefault((a.vendor, a.model), {"vendor": a.vendor, "model": a.model,
                              "accelerators": 0, "gpu_milli": 0, "allocated_milli": 0,
                              "memory_mib": 0, "allocated_memory_mib": 0, "in_use_milli": 0})
        util = samples[a.uuid].gpu_util_pct if a.uuid in samples else None
        in_use = int(round(min(max(util or 0.0, 0.0), 100.0) * 10))
        for bucket in (g, totals):
            bucket["accelerators"] += 1
            bucket["gpu_milli"] += 1000
            bucket["memory_mib"] += a.memory_mib
            bucket["allocated_milli"] += a.allocated_milli
            bucket["allocated_memory_mib"] += a.allocated_memory_mib
            bucket["in_use_milli"] += in_use
    return {"totals": totals, "by_model": sorted(groups.values(), key=lambda g: (g["vendor"], g["model"]))}
