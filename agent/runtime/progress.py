"""Reads a running member's own GPU memory report from its progress lines on the node.

Under MPS, NVML lists only the MPS server, so the per-job figure comes from the workload:
``GPUPOOL_PROGRESS {"gpu_memory_mib": 18000}`` (one accelerator, or the same on each) or
``{"gpu_memory_mib": {"0": 18000, "GPU-...": 9000}}`` (by visible ordinal or UUID). The figure
should include the CUDA context (e.g. torch ``memory_reserved`` + the margin in
``GPUPOOL_MEMORY_MARGIN_MIB``). The MPS pinned limit stays the hard bound either way.
"""

from __future__ import annotations

import json
from pathlib import Path

from agent.runtime import logs
from controlplane.core.wire import PROGRESS_PREFIX

POLL_BYTES = 256 * 1024


def parse_gpu_memory(value: object, uuids: list[str]) -> dict[str, float]:
    """uuid -> MiB from a report's ``gpu_memory_mib`` (unknown keys and bad numbers ignored)."""
    if isinstance(value, bool):
        return {}
    if isinstance(value, (int, float)):
        return {u: float(value) for u in uuids} if value >= 0 else {}
    out: dict[str, float] = {}
    if isinstance(value, dict):
        for key, mib in value.items():
            uuid = uuids[int(key)] if str(key).isdigit() and int(key) < len(uuids) else key
            if uuid in uuids and isinstance(mib, (int, float)) and not isinstance(mib, bool) and mib >= 0:
                out[uuid] = float(mib)
    return out


class ProgressReader:
    """Follows a member's stdout (logical offsets, so the log cap is harmless) for GPU memory."""

    def __init__(self, path: Path, uuids: list[str]) -> None:
        self.path = path
        self.uuids = uuids
        self.offset = 0
        self._partial = ""
        self.gpu_memory: dict[str, float] = {}

    def poll(self) -> None:
        if not self.uuids:
            return
        text, self.offset = logs.read_chunk(self.path, self.offset, POLL_BYTES)
        if not text:
            return
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()[-4096:]
        for line in lines:
            if not line.startswith(PROGRESS_PREFIX) or "gpu_memory_mib" not in line:
                continue
            try:
                value = json.loads(line[len(PROGRESS_PREFIX):])
            except ValueError:
                continue
            if isinstance(value, dict) and "gpu_memory_mib" in value:
                self.gpu_memory.update(parse_gpu_memory(value["gpu_memory_mib"], self.uuids))
