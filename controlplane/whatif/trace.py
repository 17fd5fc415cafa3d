"""The Alibaba GPU v2023 pod lists as a what-if workload (arrivals and departures in time).

A pod arrives at ``creation_time`` and, once placed, runs for ``deletion_time -
scheduled_time`` (how long it really ran). Left out: pods that never started in the trace
(no ``scheduled_time``: deleted while pending, so they have no run time) and CPU-only pods
(they use no GPU; the source cluster also had CPU-only nodes for them).

Observed use: the trace has none, so each GPU pod gets the use of a pod of the GenAI 2026
trace drawn uniformly at random (seeded, pods in name order), scaled to its own request: a
pod that asked for 0.5 GPU uses half of what the drawn pod used of its whole GPU.

GPU memory: the trace does not give its cards' memory (G1/G2/G3 are undisclosed), and the
GenAI use is a share of a 48 GiB card, so every card here has 48 GiB: memory is a share of
the card, the same for every model.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from controlplane.core.resources import WHOLE, Constraints, Request
from controlplane.whatif import genai
from controlplane.whatif.rightsize import UsageBasis
from controlplane.whatif.workload import Job, Workload, WorkloadError, load_nodes, number, read_csv

POD_COLUMNS = ("name", "cpu_milli", "memory_mib", "num_gpu", "gpu_milli")
TIME_COLUMNS = ("creation_time", "deletion_time", "scheduled_time")
NODE_FILE = "openb_node_list_gpu_node.csv"
USAGE_FOLDER = Path("..") / "alibaba-genai-2026"


def default_paths(pods: Path) -> tuple[Path, Path]:
    """The node list and the GenAI usage folder that sit next to a pod list in shared/data."""
    return pods.parent / NODE_FILE, (pods.parent / USAGE_FOLDER).resolve()


def load_trace(pods: str | Path, nodes: str | Path | None = None,
               usage: str | Path | None = None, seed: int = 42) -> Workload:
    """The pod list ``pods`` on the node list ``nodes`` (default: the one beside it), with use
    drawn from the GenAI folder ``usage`` (None: no observed use)."""
    pods = Path(pods)
    node_path = Path(nodes) if nodes else default_paths(pods)[0]
    p, rows = read_csv(pods, POD_COLUMNS)
    if rows and not set(TIME_COLUMNS) <= set(rows[0]):
        raise WorkloadError(f"{p}: no {'/'.join(TIME_COLUMNS)} columns, so it cannot be "
                            "replayed in time (the multigpu* lists carry none)")
    excluded = {"cpu_only": 0, "never_started": 0}
    jobs = []
    for line, row in enumerate(rows, start=2):
        num_gpu = int(number(p, line, row, "num_gpu"))
        milli = int(number(p, line, row, "gpu_milli"))
        if milli > WHOLE:
            raise WorkloadError(f"{p}: line {line}: gpu_milli {milli} is above {WHOLE}")
        if not num_gpu:
            excluded["cpu_only"] += 1
            continue
        if not (row.get("scheduled_time") or "").strip():
            excluded["never_started"] += 1
            continue
        created = number(p, line, row, "creation_time")
        started = number(p, line, row, "scheduled_time")
        ended = number(p, line, row, "deletion_time")
        if ended < started:
            raise WorkloadError(f"{p}: line {line}: deletion_time {ended:g} is before "
                                f"scheduled_time {started:g}")
        spec = tuple(s.strip() for s in (row.get("gpu_spec") or "").split("|") if s.strip())
        cpu, mem = int(number(p, line, row, "cpu_milli")), int(number(p, line, row, "memory_mib"))
        if milli >= WHOLE:
            req = Request(cpu, mem, gpus=num_gpu, constraints=Constraints(models=spec))
        else:
            req = Request(cpu, mem, gpu_milli=milli, constraints=Constraints(models=spec))
        jobs.append(Job(row["name"], created, ended - started, req))
    if not jobs:
        raise WorkloadError(f"{p}: no GPU pod that ran")
    nodes_rows = load_nodes(node_path, gpu_memory_mib=genai.CARD_MIB)
    bases = genai.pod_bases(usage) if usage else []
    if bases:
        jobs = with_drawn_usage(jobs, bases, seed)
    jobs.sort(key=lambda j: (j.submit_s, j.job_id))
    notes = ["every card has 48 GiB: GPU memory is a share of the card (the trace's cards are "
             "undisclosed; the GenAI use is a share of a 48 GiB card)"]
    if bases:
        notes.append(f"observed use drawn per pod (seed {seed}) from {len(bases)} GenAI 2026 pods "
                     "with an hour or more of samples, scaled to the pod's request")
    return Workload(p.stem, jobs, nodes_rows, excluded, notes)


def with_drawn_usage(jobs: list[Job], usage: Sequence[UsageBasis], seed: int) -> list[Job]:
    """Each job with the use of a uniformly drawn usage pod, scaled to its request per device."""
    ordered = sorted(jobs, key=lambda j: j.job_id)
    picks = np.random.default_rng(seed).integers(len(usage), size=len(ordered))
    out = []
    for job, pick in zip(ordered, picks):
        share = 1.0 if job.request.gpus else job.request.gpu_milli / WHOLE
        out.append(Job(job.job_id, job.submit_s, job.run_s, job.request,
                       usage[int(pick)].scaled(share)))
    return out
