"""Huawei Ascend backend placeholder: shows where a second vendor plugs in, and says it is absent.

A real one would read identity and telemetry through DCMI / ``npu-smi`` the way nvml.py uses
NVML. Until then, Ascend NPUs can be simulated with ``simulate:1x8xAscend-910B``.
"""

from __future__ import annotations

from typing import Any

from agent.devices.base import BackendUnavailable


def from_spec(args: str, options: dict[str, Any]):
    raise BackendUnavailable(
        "the Ascend backend is not implemented yet (no DCMI support in this agent); "
        "start with --simulate 1x8xAscend-910B to use simulated Ascend 910B NPUs"
    )
