"""The DeviceBackend protocol every vendor module implements (discover, sample, health).

A backend answers in wire types so the agent can forward them as they are. A query a device
does not support leaves that field None instead of failing the whole sample.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from controlplane.core.wire import AcceleratorInfo, AcceleratorSample


@dataclass(frozen=True, slots=True)
class ProcessUsage:
    """One OS process's use of one accelerator."""

    pid: int
    accelerator_uuid: str
    memory_used_mib: float
    sm_util_pct: float | None = None


class BackendUnavailable(RuntimeError):
    """The backend cannot run on this machine (e.g. no NVIDIA driver); the message says why."""


@runtime_checkable
class DeviceBackend(Protocol):
    name: str

    def discover(self) -> list[AcceleratorInfo]:
        """Identity of every schedulable accelerator (MIG devices count as their own)."""

    def sample(self) -> list[AcceleratorSample]:
        """One telemetry sample per accelerator."""

    def processes(self) -> list[ProcessUsage]:
        """Per-process memory (and SM utilisation where supported) on every accelerator."""

    def health(self) -> dict[str, bool]:
        """uuid -> healthy."""

    def close(self) -> None:
        """Release the library handle."""
