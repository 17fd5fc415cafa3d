"""Where a workload runs: rank and world from the agent's env, device, precision, slice memory cap."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from typing import Any


class WorkloadError(Exception):
    """A problem the user can fix; the entry point prints it (no traceback) and exits with code 2."""


@dataclass
class Topology:
    """Where this process sits: global rank of world, local rank of the member's ranks, node rank."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    ranks_per_node: int = 1
    node_rank: int = 0
    nodes: int = 1

    def progress_fields(self) -> dict[str, int]:
        return {"world_size": self.world_size, "ranks_per_node": self.ranks_per_node, "nodes": self.nodes,
                "node_rank": self.node_rank}


@dataclass
class Runtime:
    rank: int
    world_size: int
    local_rank: int
    device: Any  # torch.device
    precision: str  # fp32 | bf16 | fp16
    output_dir: str
    notes: list[str]
    topology: Topology = field(default_factory=Topology)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def log(self, msg: str) -> None:
        print(f"[rank {self.rank}] {msg}", flush=True)


def _int_env(name: str, default: int) -> int:
    raw = os.environ.get(name)
    try:
        return int(raw) if raw not in (None, "") else default
    except ValueError:
        raise WorkloadError(f"rendezvous env: {name}={raw!r} is not a number") from None


def topology() -> Topology:
    """This process's place in the job: a rank the launcher started (torchrun's variables, with
    LOCAL_WORLD_SIZE), a member process the agent started (GPUPOOL_NNODES/NODE_RANK/NPROC_PER_NODE),
    or a plain process (RANK/WORLD_SIZE/LOCAL_RANK, single process without them)."""
    if os.environ.get("GPUPOOL_NNODES") and not os.environ.get("LOCAL_WORLD_SIZE"):
        nodes, node = _int_env("GPUPOOL_NNODES", 1), _int_env("GPUPOOL_NODE_RANK", 0)
        per_node = _int_env("GPUPOOL_NPROC_PER_NODE", 1)
        rank, world, local = node * per_node, nodes * per_node, 0
    else:
        rank, world, local = _int_env("RANK", 0), _int_env("WORLD_SIZE", 1), _int_env("LOCAL_RANK", 0)
        per_node, node = _int_env("LOCAL_WORLD_SIZE", 1), _int_env("NODE_RANK", 0)
        nodes = max(world // max(per_node, 1), 1)
    if not 0 <= rank < world or not 0 <= local < per_node:
        raise WorkloadError(f"rendezvous env: RANK {rank} / LOCAL_RANK {local} are outside WORLD_SIZE {world} "
                            f"with {per_node} rank(s) per node")
    return Topology(rank=rank, world_size=world, local_rank=local, ranks_per_node=per_node, node_rank=node,
                    nodes=nodes)


def export_dist_env(topo: Topology) -> None:
    """RANK/WORLD_SIZE/LOCAL_RANK (and a loopback rendezvous by default) for torch.distributed (env://)."""
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29500")
    os.environ.update(RANK=str(topo.rank), WORLD_SIZE=str(topo.world_size), LOCAL_RANK=str(topo.local_rank))


def choose_precision(requested: str, device_type: str, bf16_ok: bool) -> tuple[str, str | None]:
    """bf16/fp16 where the device supports it, fp32 otherwise (with a note when downgraded)."""
    if device_type != "cuda":
        if requested in ("bf16", "fp16"):
            return "fp32", f"precision {requested} is not used on {device_type}; training in fp32"
        return "fp32", None
    if requested == "auto":
        return ("bf16" if bf16_ok else "fp16"), None
    if requested == "bf16" and not bf16_ok:
        return "fp16", "this GPU has no bf16; training in fp16"
    return requested, None


def setup(requested_precision: str = "auto", output: str | None = None) -> Runtime:
    """Resolve rank, device (with the slice's memory cap) and precision for this process."""
    import torch

    from workloads import progress

    topo = topology()
    export_dist_env(topo)
    rank, world, local = topo.rank, topo.world_size, topo.local_rank
    progress.set_context(**topo.progress_fields())
    notes: list[str] = []
    if torch.cuda.is_available():
        device = torch.device("cuda", local % torch.cuda.device_count())
        torch.cuda.set_device(device)
        frac = os.environ.get("GPUPOOL_MEMORY_FRACTION")
        if frac:
            torch.cuda.set_per_process_memory_fraction(min(max(float(frac), 0.01), 1.0), device)
            notes.append(f"memory capped at {float(frac):.3f} of the GPU (GPUPOOL_MEMORY_FRACTION)")
        bf16_ok = torch.cuda.is_bf16_supported()
    else:
        device, bf16_ok = torch.device("cpu"), False
        threads = os.environ.get("GPUPOOL_CPU_THREADS")
        if threads:
            torch.set_num_threads(max(1, int(threads)))
    precision, note = choose_precision(requested_precision, device.type, bf16_ok)
    if note:
        notes.append(note)
    out = output or os.environ.get("GPUPOOL_OUTPUT_DIR") or os.path.abspath("output")
    os.makedirs(out, exist_ok=True)
    return Runtime(rank=rank, world_size=world, local_rank=local, device=device, precision=precision,
                   output_dir=out, notes=notes, topology=topo)


def read_spec_json(argv: list[str]) -> dict[str, Any]:
    """The spec as a dict: ``--spec-file PATH``, ``--spec-json JSON``, else the file the agent
    wrote and named in ``GPUPOOL_SPEC_FILE`` (specs never travel in argv from the agent)."""
    for flag in ("--spec-json", "--spec-file"):
        if flag in argv:
            i = argv.index(flag)
            if i + 1 >= len(argv):
                raise WorkloadError(f"{flag} needs a value")
            return _spec_object(flag, argv[i + 1] if flag == "--spec-json" else _read(flag, argv[i + 1]))
    path = os.environ.get("GPUPOOL_SPEC_FILE")
    if path:
        return _spec_object("GPUPOOL_SPEC_FILE", _read("GPUPOOL_SPEC_FILE", path))
    raise WorkloadError("usage: python -m workloads.<kind> --spec-file spec.json | --spec-json '{...}' "
                        "(or GPUPOOL_SPEC_FILE=spec.json)")


def _read(what: str, path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as exc:
        raise WorkloadError(f"{what}: cannot read {path}: {exc.strerror or exc}") from None


def _spec_object(what: str, raw: str) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise WorkloadError(f"{what}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise WorkloadError(f"{what}: expected a JSON object")
    return data


def run_main(fn: Any, ranks_of: str | None = None) -> None:
    """Run an entry point: user errors print one clear line and exit 2.

    ``ranks_of`` (a module) runs one rank of it per GPU of the member instead (training kinds).
    """
    from workloads.training import launcher

    try:
        code = launcher.launch(ranks_of, sys.argv[1:]) if ranks_of and launcher.wanted() else fn(sys.argv[1:])
    except WorkloadError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        sys.exit(2)
    except ValueError as exc:  # includes pydantic.ValidationError
        print(f"error: invalid spec or data: {exc}", file=sys.stderr, flush=True)
        sys.exit(2)
    sys.exit(code or 0)
