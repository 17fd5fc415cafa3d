"""Plain factory functions for test rows on a migrated database (no fixture chains)."""

from __future__ import annotations

from controlplane.core.requests import request_from_resources, request_to_json
from controlplane.db.base import now
from controlplane.db.database import Database
from controlplane.db.models import (AcceleratorRow, AttemptRow, JobRow, MemberRow, NodeRow,
                                    QueueRow, TeamRow, UserRow)
from workloads.specs import parse_job_spec


def make_node(db: Database, name: str, gpus: int = 1, memory_mib: int = 1000) -> list[str]:
    """A ready node with ``gpus`` accelerators; returns their uuids."""
    with db.tx() as s:
        node = NodeRow(name=name, address="127.0.0.1", state="ready", cordoned=False, cpu_milli=64000,
                       memory_mib=512000, labels={}, backend="simulated", agent_version="t", epoch=1,
                       last_heartbeat_at=now(), registered_at=now())
        s.add(node)
        s.flush()
        uuids = [f"GPU-{name}-{i}" for i in range(gpus)]
        for i, u in enumerate(uuids):
            s.add(AcceleratorRow(uuid=u, node_id=node.id, index=i, vendor="nvidia", model="H100-80GB",
                                 memory_mib=memory_mib, labels={}, healthy=True, allocated_milli=0,
                                 allocated_memory_mib=0))
    return uuids


def make_job(db: Database, name: str = "job", gpu: float = 0.5, status: str = "pending") -> int:
    with db.tx() as s:
        team = s.query(TeamRow).filter_by(name="default").one_or_none()
        if team is None:
            team = TeamRow(name="default", created_at=now())
            s.add(team)
            s.flush()
            s.add(QueueRow(name="default", team_id=team.id, created_at=now()))
            s.add(UserRow(name="admin", team_id=team.id, role="admin", created_at=now()))
            s.flush()
        queue = s.query(QueueRow).filter_by(team_id=team.id, name="default").one()
        user = s.query(UserRow).filter_by(name="admin").one()
        spec = parse_job_spec({"kind": "custom", "name": name, "command": ["true"],
                               "resources": {"gpu": gpu}}).model_dump(mode="json")
        request = request_to_json(request_from_resources(spec["resources"]))
        job = JobRow(name=name, kind="custom", team_id=team.id, queue_id=queue.id, user_id=user.id,
                     status=status, priority=0, spec=spec, request=request,
                     max_attempts=3, attempt=0, created_at=now())
        s.add(job)
        s.flush()
        return job.id


def make_member(db: Database, job_id: int, node: str) -> int:
    """An active attempt with one member on ``node`` (no slices yet); returns the member id."""
    with db.tx() as s:
        node_row = s.query(NodeRow).filter_by(name=node).one()
        attempt = AttemptRow(job_id=job_id, number=1, active=True, master_node_id=node_row.id,
                             master_addr="127.0.0.1", master_port=29500, created_at=now())
        s.add(attempt)
        s.flush()
        member = MemberRow(attempt_id=attempt.id, job_id=job_id, rank=0, node_id=node_row.id,
                           state="running", delivered=True)
        s.add(member)
        s.flush()
        return member.id
