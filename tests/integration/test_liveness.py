"""Node liveness that outages cannot fool: heartbeats are stamped and compared on the database's
clock (replica clock skew is harmless), and a new leader waits one full heartbeat timeout
before it declares any node lost."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import select, update

from controlplane.core import wire
from controlplane.core.states import Role
from controlplane.db.database import Database
from controlplane.db.models import NodeRow
from controlplane.loops import liveness
from controlplane.loops.runner import Loops
from controlplane.services import nodes
from controlplane.services.principal import Principal
from controlplane.settings import Settings
from tests.support.factories import make_node
from tests.support.waiting import wait_until


def _state(db: Database, name: str) -> str:
    with db.read() as s:
        return s.scalar(select(NodeRow.state).where(NodeRow.name == name))


@pytest.mark.parametrize("skew_s", [-3600.0, 3600.0])
def test_replica_clock_skew_never_loses_a_node(db, monkeypatch, skew_s: float) -> None:  # noqa: ANN001
    make_node(db, "skewed")
    with db.read() as s:
        node_id = s.scalar(select(NodeRow.id).where(NodeRow.name == "skewed"))
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + skew_s)  # this replica's clock is off by an hour
    who = Principal(Role.AGENT, 0, node_id=node_id, node="skewed")
    nodes.heartbeat(db, who, wire.Heartbeat(node_id=str(node_id), ts=time.time()), 10.0)
    monkeypatch.setattr(time, "time", real)  # the leader's clock is right
    assert liveness.sweep(db, timeout_s=30.0) == []
    assert _state(db, "skewed") == "ready"


def test_a_new_leader_waits_one_heartbeat_timeout_before_sweeping(db, tmp_path) -> None:  # noqa: ANN001
    make_node(db, "silent")
    with db.tx() as s:  # silent for an hour, as after a long control-plane outage
        s.execute(update(NodeRow).values(last_heartbeat_at=time.time() - 3600))
    settings = Settings(home=tmp_path, heartbeat_timeout_s=3.0, liveness_interval_s=0.05,
                        scheduler_interval_s=0.05, scheduler_lease_s=5.0)
    loops = Loops(db, settings)
    started = time.monotonic()
    loops.start()
    try:
        wait_until(lambda: loops.is_leader and loops.cycles >= 3, 30, "the loop to lead and cycle")
        if time.monotonic() - started < settings.heartbeat_timeout_s:
            assert _state(db, "silent") == "ready"  # leading, but within its grace: nobody lost yet
        wait_until(lambda: _state(db, "silent") == "not_ready", 60, "the silent node to be lost")
        assert time.monotonic() - started >= settings.heartbeat_timeout_s
    finally:
        loops.stop()
