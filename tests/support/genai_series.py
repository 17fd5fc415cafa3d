"""One pod's recorded GPU use from the Alibaba GenAI 2026 trace (../shared/data/alibaba-genai-2026):
utilisation % and memory MiB in time order, read straight from the tar.gz files (skips when absent)."""

from __future__ import annotations

import csv
import io
import tarfile
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "alibaba-genai-2026"
POD = "00800b6d2cabe5b9ce855ec9eab6e9ff"  # a typical pod: p95 26.4 %, peak 36.2 GiB (37,098 MiB)


def _rows(archive: str, pod: str) -> list[tuple[float, float]]:
    path = DATA / archive
    if not path.is_file():
        pytest.skip(f"{path} is not here (the shared trace data)")
    with tarfile.open(path) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith(".csv"))
        text = io.TextIOWrapper(tar.extractfile(member), encoding="utf-8")  # type: ignore[arg-type]
        rows = [(float(r["timestamp_anon"]), float(r["value"])) for r in csv.DictReader(text)
                if r["container_ip"] == pod]
    return sorted(rows)


def pod_series(pod: str = POD) -> tuple[list[float], list[float]]:
    """(utilisation %, memory MiB) samples of ``pod``, each in time order."""
    util = [v for _, v in _rows("pod_gpu_duty_cycle_anon.tar.gz", pod)]
    mem = [v / 2**20 for _, v in _rows("pod_gpu_memory_used_bytes_anon.tar.gz", pod)]
    return util, mem
