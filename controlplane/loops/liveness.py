"""Node liveness: one set-based UPDATE marks silent nodes not_ready; their jobs are lost."""

from __future__ import annotations

from sqlalchemy import select, update

from controlplane.core.states import NodeState
from controlplane.db.base import db_clock
from controlplane.db.database import Database, retry_deadlocks
from controlplane.db.models import NodeRow
from controlplane.services import events, lifecycle


@retry_deadlocks
def sweep(db: Database, timeout_s: float) -> list[str]:
    """Mark nodes silent for longer than ``timeout_s`` (on the database's clock) not_ready;
    returns their names."""
    cutoff = db_clock(db.engine.dialect.name) - timeout_s
    with db.tx() as s:
        lost = s.execute(update(NodeRow)
                         .where(NodeRow.state != NodeState.NOT_READY.value,
                                NodeRow.last_heartbeat_at < cutoff)
                         .values(state=NodeState.NOT_READY.value)
                         .returning(NodeRow.id, NodeRow.name)).all()
        if not lost:
            return []
        reason = f"node stopped heartbeating for more than {timeout_s:g}s"
        for node_id, name in lost:
            events.record(s, "node_lost", "node", name, "system", node_id=node_id, reason=reason)
        ids = [node_id for node_id, _ in lost]
        lifecycle.nodes_lost(s, ids, reason)
        return [name for _, name in lost]


@retry_deadlocks
def lost_node_leftovers(db: Database) -> int:
    """Members still live on not_ready nodes (e.g. placed in a race): close them too."""
    with db.tx() as s:
        ids = list(s.scalars(select(NodeRow.id).where(NodeRow.state == NodeState.NOT_READY.value)))
        return lifecycle.nodes_lost(s, ids, "node is not ready") if ids else 0
