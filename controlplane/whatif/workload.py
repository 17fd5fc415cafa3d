"""A what-if workload: jobs (arrival, run time, request, observed use) and the cluster's nodes."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from controlplane.core.resources import Request
from controlplane.whatif.rightsize import UsageBasis


class WorkloadError(ValueError):
    """A workload or node file is missing, malformed or has a bad value (the message says where)."""


@dataclass(frozen=True, slots=True)
class Job:
    """One job: when it arrived, how long it ran once started, what it asked for, what it used.

    ``usage`` is per accelerator, in the units of the device the job was given (None: unknown).
    """

    job_id: str
    submit_s: float
    run_s: float
    request: Request
    usage: UsageBasis | None = None


@dataclass(frozen=True, slots=True)
class NodeRow:
    """One node of the cluster the workload ran on: its CPU, memory and accelerators."""

    name: str
    cpu_milli: int
    memory_mib: int
    gpus: int
    model: str
    gpu_memory_mib: int


@dataclass(slots=True)
class Workload:
    """Jobs sorted by arrival, the nodes they ran on, and what was left out (with why)."""

    name: str
    jobs: list[Job]
    nodes: list[NodeRow]
    excluded: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def span_s(self) -> float:
        if not self.jobs:
            return 0.0
        return max(j.submit_s + j.run_s for j in self.jobs) - self.jobs[0].submit_s

    def compressed(self, factor: float) -> Workload:
        """Arrivals ``factor`` times closer together, run times unchanged (more jobs at once)."""
        if factor <= 0:
            raise WorkloadError(f"compression factor must be above 0 (got {factor})")
        if factor == 1:
            return self
        start = self.jobs[0].submit_s if self.jobs else 0.0
        jobs = [Job(j.job_id, start + (j.submit_s - start) / factor, j.run_s, j.request, j.usage)
                for j in self.jobs]
        return Workload(f"{self.name} (arrivals x{factor:g} denser)", jobs, self.nodes,
                        dict(self.excluded), [*self.notes, f"arrival times divided by {factor:g}, "
                                              "run times kept"])


def read_csv(path: str | Path, required: Sequence[str]) -> tuple[Path, list[dict[str, str]]]:
    """The rows of a CSV file that has at least the ``required`` columns."""
    p = Path(path)
    if not p.is_file():
        raise WorkloadError(f"{p}: no such file")
    with p.open(newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in required if c not in (reader.fieldnames or [])]
        if missing:
            raise WorkloadError(f"{p}: missing column(s) {', '.join(missing)}")
        return p, list(reader)


def number(path: Path, line: int, row: dict[str, str], column: str,
           default: float | None = None) -> float:
    """A non-negative number from ``row[column]`` (``default`` when empty), else a clear error."""
    raw = (row.get(column) or "").strip()
    if not raw:
        if default is None:
            raise WorkloadError(f"{path}: line {line}: column {column} is empty")
        return default
    try:
        value = float(raw)
    except ValueError:
        raise WorkloadError(f"{path}: line {line}: column {column} is not a number: {raw!r}") from None
    if value != value or value < 0:
        raise WorkloadError(f"{path}: line {line}: column {column} must be >= 0 (got {raw})")
    return value


# Memory of the models gpupool knows (MiB); a node file may give its own (gpu_memory_mib column).
KNOWN_GPU_MEMORY_MIB = {
    "T4": 15360, "P100": 16384, "V100M16": 16384, "V100M32": 32768, "A10": 24576,
    "L4": 23034, "L40S": 46068, "A100-40GB": 40960, "A100-80GB": 81920, "H100-80GB": 81559,
    "H200": 143771,
}


def load_nodes(path: str | Path, gpu_memory_mib: int | None = None) -> list[NodeRow]:
    """Nodes from a CSV ``sn,cpu_milli,memory_mib,gpu,model[,gpu_memory_mib]`` (the trace's
    node list). ``gpu_memory_mib`` overrides every card's memory (the trace's own cards are
    not all known); else the column, else the known models."""
    p, rows = read_csv(path, ("sn", "cpu_milli", "memory_mib", "gpu", "model"))
    nodes = []
    for line, row in enumerate(rows, start=2):
        gpus = int(number(p, line, row, "gpu"))
        model = (row.get("model") or "").strip()
        if not gpus:
            continue  # CPU-only nodes hold no accelerator to size
        mem = gpu_memory_mib or int(number(p, line, row, "gpu_memory_mib",
                                           KNOWN_GPU_MEMORY_MIB.get(model, 0)))
        if not mem:
            raise WorkloadError(f"{p}: line {line}: memory of GPU model {model!r} is unknown; "
                                "add a gpu_memory_mib column")
        nodes.append(NodeRow(row["sn"], int(number(p, line, row, "cpu_milli")),
                             int(number(p, line, row, "memory_mib")), gpus, model, mem))
    if not nodes:
        raise WorkloadError(f"{p}: no node with a GPU")
    return nodes
