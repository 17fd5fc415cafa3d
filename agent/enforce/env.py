"""Builds a job's slice environment (visibility, GPUPOOL_* contract, MPS and framework caps).

Returns the variables and an ``enforcement`` summary (layer -> how it is enforced) that the
agent reports in StatusReport.enforcement, so oversubscription is never silent.
See docs/slice-contract.md for the meaning of every variable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from agent.enforce.contract import memory_contract
from controlplane.core.resources import WHOLE
from controlplane.core.wire import StartOrder

# The only variables of the agent's own environment a job sees (a trailing * is a prefix): paths,
# locale and library tuning, never credentials (the agent's environment may hold its bootstrap
# token, cloud keys, HF_TOKEN...). HOME/USER/LOGNAME pass only when jobs run as the agent's user.
PASSTHROUGH = ("PATH", "LANG", "LANGUAGE", "LC_*", "TZ", "TERM", "PYTHONPATH", "LD_LIBRARY_PATH",
               "CUDA_HOME", "CUDA_PATH", "NCCL_*", "HF_HOME", "HF_HUB_CACHE", "HF_HUB_OFFLINE",
               "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "TORCH_HOME")
SAME_USER = ("HOME", "USER", "LOGNAME")


@dataclass(slots=True)
class MpsSettings:
    """How MPS applies to this job: ``mode`` managed|external|off plus the daemon's directories."""

    mode: str = "off"
    available: bool = False
    pipe_dir: str | None = None
    log_dir: str | None = None
    detail: str = ""


@dataclass(slots=True)
class SliceEnv:
    env: dict[str, str] = field(default_factory=dict)
    enforcement: dict[str, str] = field(default_factory=dict)


def is_fractional(order: StartOrder) -> bool:
    """True when the job shares its accelerator (part of the compute or of the memory)."""
    return any(s.compute_milli < WHOLE or s.memory_mib < s.device_memory_mib for s in order.slices)


def mps_thread_percentage(compute_milli: int) -> int:
    """CUDA_MPS_ACTIVE_THREAD_PERCENTAGE for a compute share (1..100, rounded up)."""
    return max(1, min(100, math.ceil(compute_milli / 10)))


def inherited_env(base: dict[str, str], *, same_user: bool = True,
                  passthrough: tuple[str, ...] = PASSTHROUGH) -> dict[str, str]:
    """The part of the agent's environment a job may see: an allow-list, never its secrets."""
    names = {p for p in passthrough if not p.endswith("*")} | (set(SAME_USER) if same_user else set())
    prefixes = tuple(p[:-1] for p in passthrough if p.endswith("*"))
    return {k: v for k, v in base.items() if k in names or (prefixes and k.startswith(prefixes))}


def slice_env(order: StartOrder, *, node: str, ports: list[int], master_port: int,
              output_dir: str, mps: MpsSettings, watchdog_grace_s: float | None,
              models: dict[str, str] | None = None) -> SliceEnv:
    """Variables that describe and enforce ``order``'s slices (they override the order's env)."""
    out = SliceEnv()
    env = out.env
    uuids = [s.accelerator_uuid for s in order.slices]
    env["GPUPOOL_JOB_ID"] = order.job_id
    env["GPUPOOL_ATTEMPT_ID"] = order.attempt_id
    env["GPUPOOL_JOB_NAME"] = order.name
    env["GPUPOOL_NODE"] = node
    env["GPUPOOL_RANK"] = str(order.rank)
    env["GPUPOOL_ACCELERATOR_UUIDS"] = ",".join(uuids)
    env["GPUPOOL_ACCELERATOR_COUNT"] = str(len(uuids))
    env["GPUPOOL_OUTPUT_DIR"] = order.env.get("GPUPOOL_OUTPUT_DIR") or output_dir
    # (a) visibility: the job sees exactly its accelerators (none when it has no slice)
    env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
    env["CUDA_VISIBLE_DEVICES"] = ",".join(uuids)
    env["NVIDIA_VISIBLE_DEVICES"] = ",".join(uuids) if uuids else "void"
    out.enforcement["visibility"] = (f"CUDA_VISIBLE_DEVICES={','.join(uuids)}" if uuids
                                     else "no accelerators visible")
    if order.slices:
        compute = min(s.compute_milli for s in order.slices)
        memory = min(s.memory_mib for s in order.slices)
        device_memory = min(s.device_memory_mib for s in order.slices)
        collective = len(order.slices) > 1 or (order.rendezvous is not None and order.rendezvous.nnodes > 1)
        tight = min(order.slices, key=lambda s: (s.memory_mib, s.device_memory_mib))
        contract = memory_contract(tight.memory_mib, tight.device_memory_mib,
                                   (models or {}).get(tight.accelerator_uuid), collective=collective)
        env["GPUPOOL_COMPUTE_MILLI"] = str(compute)
        env["GPUPOOL_MEMORY_MIB"] = str(memory)
        env["GPUPOOL_DEVICE_MEMORY_MIB"] = str(device_memory)
        env["GPUPOOL_MEMORY_MARGIN_MIB"] = str(contract.margin_mib)
        env["GPUPOOL_FRAMEWORK_MEMORY_MIB"] = str(contract.framework_cap_mib)
        env["GPUPOOL_MEMORY_FRACTION"] = f"{contract.torch_fraction:.4f}"
        env["GPUPOOL_VLLM_GPU_MEMORY_UTILIZATION"] = f"{contract.vllm_utilization:.3f}"
        _apply_mps(order, mps, out)
        # (c) framework caps the packaged workloads honour: the slice minus the CUDA overhead
        out.enforcement["framework"] = (
            f"GPUPOOL_MEMORY_FRACTION={env['GPUPOOL_MEMORY_FRACTION']} (torch), "
            f"GPUPOOL_VLLM_GPU_MEMORY_UTILIZATION={env['GPUPOOL_VLLM_GPU_MEMORY_UTILIZATION']} (vLLM): "
            + contract.describe())
        # (d) the watchdog
        if watchdog_grace_s is None:
            out.enforcement["watchdog"] = "off"
        else:
            out.enforcement["watchdog"] = (f"stop when over {memory} MiB per accelerator "
                                           f"for more than {watchdog_grace_s:g} s")
    # ports and rendezvous
    for i, port in enumerate(ports):
        env["GPUPOOL_PORT" if i == 0 else f"GPUPOOL_PORT_{i}"] = str(port)
    if ports:
        env["GPUPOOL_PORTS"] = ",".join(str(p) for p in ports)
    # one process per member as the agent starts it; a launcher inside it (torchrun) that runs one
    # process per accelerator sets RANK/LOCAL_RANK/WORLD_SIZE per process from GPUPOOL_NPROC_PER_NODE
    rdv = order.rendezvous
    env["MASTER_ADDR"] = rdv.master_addr if rdv else "127.0.0.1"
    env["MASTER_PORT"] = str(rdv.master_port if rdv else master_port)
    env["GPUPOOL_NNODES"] = str(rdv.nnodes if rdv else 1)
    env["GPUPOOL_NODE_RANK"] = str(rdv.node_rank if rdv else order.rank)
    env["GPUPOOL_NPROC_PER_NODE"] = str(rdv.nproc_per_node if rdv else 1)
    env["WORLD_SIZE"] = str(rdv.nnodes if rdv else 1)
    env["RANK"] = env["NODE_RANK"] = str(rdv.node_rank if rdv else order.rank)
    env["LOCAL_RANK"] = "0"
    return out


def _apply_mps(order: StartOrder, mps: MpsSettings, out: SliceEnv) -> None:
    """(b) MPS limits for a shared accelerator: thread share and pinned device memory."""
    if mps.mode == "off":
        out.enforcement["mps"] = "off" + (f" ({mps.detail})" if mps.detail else "")
        return
    if not is_fractional(order):
        out.enforcement["mps"] = "not needed (whole accelerators)"
        return
    if not mps.available:
        out.enforcement["mps"] = f"unavailable: {mps.detail or 'no MPS daemon'}"
        return
    compute = min(s.compute_milli for s in order.slices)
    pct = mps_thread_percentage(compute)
    # device ids are ordinals as the job sees them (after CUDA_VISIBLE_DEVICES)
    limits = ",".join(f"{i}={s.memory_mib}M" for i, s in enumerate(order.slices))
    out.env["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] = str(pct)
    out.env["CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"] = limits
    if mps.pipe_dir:
        out.env["CUDA_MPS_PIPE_DIRECTORY"] = mps.pipe_dir
    if mps.log_dir:
        out.env["CUDA_MPS_LOG_DIRECTORY"] = mps.log_dir
    out.enforcement["mps"] = f"{mps.mode}: {pct}% threads, pinned memory {limits}"
