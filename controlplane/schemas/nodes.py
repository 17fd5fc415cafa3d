"""Nodes, their accelerators and the pool's capacity as the API answers them."""

from __future__ import annotations

from typing import Any

from controlplane.core.states import NodeState
from controlplane.schemas.base import ApiModel, Timestamp


class Accelerator(ApiModel):
    uuid: str
    index: int
    vendor: str
    model: str
    memory_mib: int
    healthy: bool
    allocated_milli: int
    allocated_memory_mib: int
    telemetry: dict[str, Any] | None = None  # the latest sample
    unhealthy_reason: str | None = None  # why it is cordoned (until an admin marks it healthy)
    unhealthy_since: Timestamp | None = None


class AcceleratorOnNode(Accelerator):
    node: str | None = None


class Node(ApiModel):
    id: str
    name: str
    address: str
    state: NodeState
    cordoned: bool
    health_cordoned: bool = False  # cordoned because too many of its accelerators are unhealthy
    cpu_milli: int
    memory_mib: int
    labels: dict[str, str] = {}
    backend: str
    last_heartbeat_at: Timestamp | None = None
    accelerators: list[Accelerator] = []


class NodeList(ApiModel):
    items: list[Node]


class AcceleratorList(ApiModel):
    items: list[AcceleratorOnNode]


class CapacityFigures(ApiModel):
    """Sizes in milli (1000 = one accelerator) and MiB; in use is from telemetry utilisation."""

    accelerators: int
    gpu_milli: int
    memory_mib: int
    allocated_milli: int
    allocated_memory_mib: int
    in_use_milli: int


class ModelCapacity(CapacityFigures):
    vendor: str
    model: str


class Capacity(ApiModel):
    totals: CapacityFigures
    by_model: list[ModelCapacity]
