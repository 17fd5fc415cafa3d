"""Resource model: accelerators, nodes and requests in the trace's units (milli, MiB).

One whole accelerator is 1000 compute milli. A *fractional* request asks for part of
one accelerator (compute milli < 1000 and/or some memory MiB); a *whole* request asks
for N entire accelerators. A gang is M identical members placed all-or-nothing.
These are plain dataclasses so the scheduler can build and copy tens of thousands fast.
"""

from __future__ import annotations

from dataclasses import dataclass, field

WHOLE = 1000  # compute milli of one accelerator


@dataclass(slots=True)
class Accelerator:
    """One schedulable accelerator (a GPU, or a MIG device) and what is allocated on it."""

    uuid: str
    node: str
    index: int
    vendor: str = "nvidia"
    model: str = "H100-80GB"
    memory_mib: int = 81559
    labels: dict[str, str] = field(default_factory=dict)
    numa_node: int | None = None
    interconnect_domain: str | None = None  # accelerators sharing a domain are NVLink peers
    healthy: bool = True
    allocated_milli: int = 0
    allocated_memory_mib: int = 0
    unmanaged_memory_mib: int = 0  # used by processes gpupool did not start

    @property
    def free_milli(self) -> int:
        return WHOLE - self.allocated_milli

    @property
    def free_memory_mib(self) -> int:
        return self.memory_mib - self.allocated_memory_mib - self.unmanaged_memory_mib

    @property
    def is_idle(self) -> bool:
        return self.allocated_milli == 0 and self.allocated_memory_mib == 0


@dataclass(slots=True)
class Node:
    """A machine with CPU, memory and accelerators."""

    name: str
    cpu_milli: int
    memory_mib: int
    accelerators: list[Accelerator] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    cordoned: bool = False
    ready: bool = True
    allocated_cpu_milli: int = 0
    allocated_memory_mib: int = 0

    @property
    def free_cpu_milli(self) -> int:
        return self.cpu_milli - self.allocated_cpu_milli

    @property
    def free_memory_mib(self) -> int:
        return self.memory_mib - self.allocated_memory_mib


@dataclass(frozen=True, slots=True)
class Constraints:
    """Which accelerators a request may use."""

    vendor: str | None = None
    models: tuple[str, ...] = ()  # empty: any model (the trace's gpu_spec "V100M16|V100M32")
    min_memory_mib: int = 0
    labels: tuple[tuple[str, str], ...] = ()  # node or accelerator labels that must match

    @property
    def any_accelerator(self) -> bool:
        """True when nothing is constrained: every healthy accelerator will do."""
        return not (self.vendor or self.models or self.min_memory_mib or self.labels)


@dataclass(frozen=True, slots=True)
class Request:
    """What one member of a job needs on one node.

    ``gpus`` whole accelerators, or (when ``gpus == 0`` and ``gpu_milli > 0`` or
    ``gpu_memory_mib > 0``) a fraction of one accelerator. ``gang`` members each need this.
    """

    cpu_milli: int = 0
    memory_mib: int = 0
    gpus: int = 0
    gpu_milli: int = 0
    gpu_memory_mib: int = 0  # for fractions: memory of the slice; 0 = proportional to gpu_milli
    constraints: Constraints = Constraints()
    gang: int = 1

    @property
    def is_fractional(self) -> bool:
        return self.gpus == 0 and (self.gpu_milli > 0 or self.gpu_memory_mib > 0)

    @property
    def total_gpu_milli(self) -> int:
        """Compute milli over all members: the unit of quotas and fair share."""
        per_member = self.gpus * WHOLE if self.gpus else self.gpu_milli
        return per_member * self.gang


@dataclass(frozen=True, slots=True)
class SliceGrant:
    """A piece of one accelerator granted to one member of a job."""

    accelerator_uuid: str
    compute_milli: int
    memory_mib: int
