"""Read the Alibaba GPU trace (openb) node and pod CSVs, with clear errors for bad files."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

NODE_COLUMNS = ("sn", "cpu_milli", "memory_mib", "gpu", "model")
POD_COLUMNS = ("name", "cpu_milli", "memory_mib", "num_gpu", "gpu_milli")


class TraceError(ValueError):
    """A trace file is missing, malformed or has a bad value (the message says where)."""


@dataclass(frozen=True, slots=True)
class TracePod:
    name: str
    cpu_milli: int
    memory_mib: int
    num_gpu: int
    gpu_milli: int
    gpu_spec: tuple[str, ...] = ()

    @property
    def gpu_demand(self) -> int:
        """GPU milli over all the pod's GPUs."""
        return self.num_gpu * self.gpu_milli


@dataclass(frozen=True, slots=True)
class TraceNode:
    name: str
    cpu_milli: int
    memory_mib: int
    gpus: int
    model: str


def _rows(path: str | Path, columns: tuple[str, ...]) -> list[dict[str, str]]:
    p = Path(path)
    if not p.is_file():
        raise TraceError(f"{p}: no such file")
    with p.open(newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in columns if c not in (reader.fieldnames or [])]
        if missing:
            raise TraceError(f"{p}: missing column(s) {', '.join(missing)}")
        return list(reader)


def _int(p: Path | str, line: int, row: dict[str, str], col: str) -> int:
    raw = (row.get(col) or "").strip()
    try:
        value = int(float(raw)) if raw else 0
    except ValueError:
        raise TraceError(f"{p}: line {line}: column {col} is not a number: {raw!r}") from None
    if value < 0:
        raise TraceError(f"{p}: line {line}: column {col} is negative: {value}")
    return value


def load_nodes(path: str | Path) -> list[TraceNode]:
    nodes = []
    for line, row in enumerate(_rows(path, NODE_COLUMNS), start=2):
        nodes.append(TraceNode(row["sn"], _int(path, line, row, "cpu_milli"),
                               _int(path, line, row, "memory_mib"), _int(path, line, row, "gpu"),
                               (row.get("model") or "").strip()))
    if not nodes:
        raise TraceError(f"{path}: no nodes")
    return nodes


def load_pods(path: str | Path) -> list[TracePod]:
    pods = []
    for line, row in enumerate(_rows(path, POD_COLUMNS), start=2):
        num_gpu = _int(path, line, row, "num_gpu")
        milli = _int(path, line, row, "gpu_milli")
        if milli > 1000:
            raise TraceError(f"{path}: line {line}: gpu_milli {milli} is above 1000")
        spec = tuple(s for s in (row.get("gpu_spec") or "").split("|") if s.strip())
        pods.append(TracePod(row["name"], _int(path, line, row, "cpu_milli"),
                             _int(path, line, row, "memory_mib"), num_gpu,
                             milli if num_gpu else 0, spec))
    if not pods:
        raise TraceError(f"{path}: no pods")
    return pods


def write_pods(path: str | Path, pods: list[TracePod]) -> None:
    """Write ``pods`` as a pod CSV that ``load_pods`` reads back (gpu_spec joined by '|')."""
    with Path(path).open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow((*POD_COLUMNS, "gpu_spec"))
        for p in pods:
            writer.writerow((p.name, p.cpu_milli, p.memory_mib, p.num_gpu, p.gpu_milli,
                             "|".join(p.gpu_spec)))
