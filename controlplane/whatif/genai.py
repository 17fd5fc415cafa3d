"""Observed per-pod GPU use from the Alibaba GenAI 2026 trace, as right-sizing bases.

Each pod of that trace holds one whole GPU; the two files give its duty cycle (%) and memory
used (bytes) per sample, 57 s apart. A pod's samples are joined by timestamp into minutes
(one value per minute: mean = p95 = the sample, mean = max memory) and summarised by
``rightsize.basis_of``. Pods with fewer than ``MIN_MINUTES`` joined minutes are left out.
"""

from __future__ import annotations

import csv
import io
import tarfile
from pathlib import Path

from controlplane.whatif.rightsize import MinuteUsage, UsageBasis, basis_of
from controlplane.whatif.workload import WorkloadError

UTIL_FILE = "pod_gpu_duty_cycle_anon.tar.gz"
MEMORY_FILE = "pod_gpu_memory_used_bytes_anon.tar.gz"
MIN_MINUTES = 60
CARD_MIB = 48 * 1024  # the smallest card that holds the largest peak (47.3 GiB)


def _series(path: Path) -> dict[str, dict[float, float]]:
    """container -> timestamp -> value, from the one CSV inside a .tar.gz."""
    if not path.is_file():
        raise WorkloadError(f"{path}: no such file (the GenAI usage trace)")
    try:
        with tarfile.open(path, "r:gz") as tar:
            member = next((m for m in tar.getmembers() if m.name.endswith(".csv")), None)
            if member is None:
                raise WorkloadError(f"{path}: no CSV inside")
            text = tar.extractfile(member).read().decode()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise WorkloadError(f"{path}: not a readable .tar.gz ({exc})") from None
    out: dict[str, dict[float, float]] = {}
    reader = csv.DictReader(io.StringIO(text))
    if not {"value", "timestamp_anon", "container_ip"} <= set(reader.fieldnames or []):
        raise WorkloadError(f"{path}: needs columns value,timestamp_anon,container_ip")
    for line, row in enumerate(reader, start=2):
        try:
            out.setdefault(row["container_ip"], {})[float(row["timestamp_anon"])] = float(row["value"])
        except ValueError:
            raise WorkloadError(f"{path}: line {line}: not a number") from None
    return out


def pod_minutes(folder: str | Path) -> dict[str, list[MinuteUsage]]:
    """Per pod, its joined minutes (compute %, memory MiB), in time order."""
    folder = Path(folder)
    util, memory = _series(folder / UTIL_FILE), _series(folder / MEMORY_FILE)
    pods = {}
    for pod in sorted(set(util) & set(memory)):
        u, m = util[pod], memory[pod]
        rows = [MinuteUsage("0", u[t], u[t], m[t] / 2**20, m[t] / 2**20)
                for t in sorted(set(u) & set(m))]
        pods[pod] = rows
    return pods


def pod_bases(folder: str | Path) -> list[UsageBasis]:
    """The right-sizing basis of every pod with at least ``MIN_MINUTES`` minutes, by pod id."""
    bases = [basis_of(rows) for rows in pod_minutes(folder).values() if len(rows) >= MIN_MINUTES]
    if not bases:
        raise WorkloadError(f"{folder}: no pod with {MIN_MINUTES} minutes of usage")
    return bases
