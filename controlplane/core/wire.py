"""Agent <-> control plane messages (HTTP + JSON). Both sides import only this module.

Endpoints (all under /api/v1/agent, bearer auth):
  POST /register       RegisterRequest  -> RegisterResponse   (bootstrap token)
  POST /heartbeat      Heartbeat        -> HeartbeatResponse  (node token)
  GET  /assignments?wait=S&epoch=E      -> Assignments        (long-poll; node token)
  POST /status         StatusBatch      -> Ack                (node token)
  POST /logs           LogBatch         -> Ack                (node token)
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from controlplane.core.bounds import INT32_MAX, Count32, Count64, Int32, WireId, text

PROTOCOL_VERSION = 1
PROGRESS_PREFIX = "GPUPOOL_PROGRESS "  # a log line "GPUPOOL_PROGRESS {json}" is structured progress


class AcceleratorInfo(BaseModel):
    """One accelerator as the node agent discovered it."""

    uuid: Annotated[str, text(128)]
    index: Count32
    vendor: Annotated[str, text(64)] = "nvidia"
    model: Annotated[str, text(128)]  # normalised, e.g. "H100-80GB"
    name: Annotated[str, text(256)] = ""  # vendor's product name, e.g. "NVIDIA H100 80GB HBM3"
    memory_mib: Count64
    serial: Annotated[str, text(128)] | None = None
    pci_bus_id: Annotated[str, text(64)] | None = None
    compute_capability: Annotated[str, text(32)] | None = None
    numa_node: Annotated[int, Field(ge=-1, le=INT32_MAX)] | None = None
    interconnect_domain: Annotated[str, text(128)] | None = None
    mig_parent_uuid: Annotated[str, text(128)] | None = None
    labels: dict[Annotated[str, text(253)], Annotated[str, text(1024)]] = Field(default_factory=dict)


class NodeInfo(BaseModel):
    hostname: Annotated[str, text(253), Field(min_length=1)]
    address: Annotated[str, text(253)] = "127.0.0.1"  # where this node's job endpoints can be reached
    cpu_milli: Count64
    memory_mib: Count64
    labels: dict[Annotated[str, text(253)], Annotated[str, text(1024)]] = Field(default_factory=dict)
    agent_version: Annotated[str, text(64)] = "0.1.0"
    backend: Annotated[str, text(64)] = "simulated"  # nvml | simulated | ...


class RegisterRequest(BaseModel):
    protocol: Int32 = PROTOCOL_VERSION
    node: NodeInfo
    accelerators: list[AcceleratorInfo]


class LogCap(BaseModel):
    """How much of each job member's stream the server keeps: the first ``head_bytes`` and the
    newest rest of ``max_bytes``. Agents never ship the middle it would drop."""

    max_bytes: int = 16 * 1024 * 1024
    head_bytes: int = 1024 * 1024


class RegisterResponse(BaseModel):
    node_id: str
    node_token: str
    heartbeat_interval_s: float = 10.0
    # after this long without heartbeats the server declares the node lost and requeues its jobs;
    # an agent that hears nothing from the control plane for this long stops its jobs (fencing)
    node_loss_timeout_s: float = 40.0
    log_cap: LogCap = Field(default_factory=lambda: LogCap())


class AcceleratorSample(BaseModel):
    """Telemetry for one accelerator at one instant (fields a device lacks stay None)."""

    model_config = ConfigDict(allow_inf_nan=False)  # stored as JSON, which has no NaN

    uuid: Annotated[str, text(128)]
    ts: float
    gpu_util_pct: float | None = None
    mem_util_pct: float | None = None
    memory_used_mib: float | None = None
    power_w: float | None = None
    energy_j: float | None = None
    temperature_c: float | None = None
    sm_clock_mhz: float | None = None
    throttle_reasons: Count64 | None = None
    ecc_errors: Count64 | None = None
    xid_errors: Count64 | None = None  # XID events seen since the agent started
    last_xid: Count64 | None = None  # code of the latest XID (DCGM_FI_DEV_XID_ERRORS), 0 = none
    healthy: bool = True
    unmanaged_memory_mib: float = 0.0


class SliceUsage(BaseModel):
    """What one running job's processes use on one accelerator."""

    job_id: str
    attempt_id: str
    accelerator_uuid: str
    memory_used_mib: float
    sm_util_pct: float | None = None


class Heartbeat(BaseModel):
    model_config = ConfigDict(allow_inf_nan=False)

    node_id: Annotated[str, text(32)]
    ts: float
    healthy: bool = True
    samples: list[AcceleratorSample] = Field(default_factory=list)
    slice_usage: list[SliceUsage] = Field(default_factory=list)
    running_attempts: list[str] = Field(default_factory=list)


class HeartbeatResponse(BaseModel):
    ok: bool = True
    heartbeat_interval_s: float = 10.0
    node_loss_timeout_s: float = 40.0
    log_cap: LogCap = Field(default_factory=lambda: LogCap())


class SliceSpec(BaseModel):
    accelerator_uuid: str
    compute_milli: int
    memory_mib: int
    device_memory_mib: int  # the whole accelerator's memory, for fractions


class Rendezvous(BaseModel):
    """Where a gang meets: member ``node_rank`` of ``nnodes``, each running ``nproc_per_node``
    processes (one per whole accelerator of the member, at least one)."""

    master_addr: str
    master_port: int
    nnodes: int = 1
    node_rank: int = 0
    nproc_per_node: int = 1

    @property
    def world_size(self) -> int:
        """Processes in the whole job."""
        return self.nnodes * self.nproc_per_node


class JobIdentity(BaseModel):
    """Whose job this is, as the server knows it (never read from the job's own environment):
    labels its usage series and picks the job's uid on the node."""

    team: str
    queue: str
    user: str | None = None


class StartOrder(BaseModel):
    job_id: str
    attempt_id: str
    epoch: int
    rank: int = 0
    name: str
    argv: list[str]  # a leading "python" means the agent's own interpreter
    env: dict[str, str] = Field(default_factory=dict)
    workdir: str | None = None
    slices: list[SliceSpec] = Field(default_factory=list)
    # the member's host share, enforced by its cgroup (0: not limited)
    cpu_milli: Count32 = 0
    memory_mib: Count32 = 0
    rendezvous: Rendezvous | None = None
    identity: JobIdentity | None = None
    # the normalised spec of a packaged workload; the agent writes it to a file only the job's
    # uid can read and points GPUPOOL_SPEC_FILE at it (specs never travel in argv)
    spec: dict | None = None
    image: str | None = None  # run the member in this OCI image (container runtime)
    grace_s: float = 10.0
    port_count: int = 0  # ports the agent allocates (GPUPOOL_PORT, GPUPOOL_PORT_1...)
    readiness_path: str | None = None  # HTTP path probed on GPUPOOL_PORT before "ready"


class StopOrder(BaseModel):
    job_id: str
    attempt_id: str
    rank: int = 0  # the member this order stops (its status report answers for that rank)
    epoch: int
    reason: str
    grace_s: float = 10.0


class Assignments(BaseModel):
    epoch: int  # the node's assignment epoch; agents send it back to long-poll for changes
    start: list[StartOrder] = Field(default_factory=list)
    stop: list[StopOrder] = Field(default_factory=list)
    # attempts this node should be running; anything else it runs is stale and must stop
    desired_attempts: list[str] = Field(default_factory=list)


class StatusKind(StrEnum):
    STARTED = "started"
    READY = "ready"
    EXITED = "exited"
    FAILED_TO_START = "failed_to_start"
    KILLED = "killed"  # stopped by the agent (stop order, watchdog)


class StatusReport(BaseModel):
    seq: Count64  # per-agent sequence number; the server ignores duplicates on replay
    job_id: WireId
    attempt_id: WireId
    rank: Count32 = 0
    kind: StatusKind
    ts: float
    pid: Count32 | None = None
    exit_code: Int32 | None = None
    endpoint: Annotated[str, text(512)] | None = None
    reason: Annotated[str, text(4096)] | None = None
    enforcement: dict[Annotated[str, text(64)], Annotated[str, text(4096)]] = Field(default_factory=dict)


class StatusBatch(BaseModel):
    node_id: Annotated[str, text(32)]
    reports: list[StatusReport]


class LogChunk(BaseModel):
    job_id: WireId
    attempt_id: WireId
    rank: Count32 = 0
    stream: Annotated[str, text(16)] = "stdout"
    offset: Count64  # byte offset of this chunk in the member's stream; replays are idempotent
    data: str


class LogBatch(BaseModel):
    node_id: Annotated[str, text(32)]
    chunks: list[LogChunk]


class Ack(BaseModel):
    accepted: int = 0
