"""The GPU memory contract of a slice: framework cap < MPS pinned limit <= watchdog limit = slice.

A CUDA process uses memory its framework does not count: the CUDA context, library workspaces
(cuBLAS), NCCL buffers. The framework is therefore capped at the slice minus that margin, so a
job at its cap still fits its slice; MPS pins the slice itself (the pinned limit counts the
context: the recorded 2 GiB limit left 1.5 GiB free next to a 516 MiB context) and the
watchdog stops a job over the slice. Margins per GPU model come from recordings
(``derive_overhead`` reads them; ``OVERHEADS`` holds the result); a model without recordings
uses the H100's figures, and the report says so.

vLLM checks at start that ``gpu_memory_utilization x total`` is free, where ``total`` is the
whole device (under MPS too) and free is what the pinned limit leaves after its own context;
its peak is its context plus that budget. So utilization = (slice - margin) / total, the same
share as the torch cap, starts on an MPS slice and keeps vLLM inside it.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Overhead:
    """Memory a CUDA process of this GPU model uses beyond what its framework allocates (MiB)."""

    model: str
    context_mib: int  # CUDA context + driver state of one process (framework allocated 0)
    workspace_mib: int  # per process beyond the framework's own tensors (cuBLAS workspace, kernels)
    nccl_mib: int  # NCCL buffers, for members that talk to other accelerators
    reserved_mib: int  # held by the driver on an idle GPU: no process can use it
    source: str

    def margin(self, collective: bool = False) -> int:
        return self.context_mib + self.workspace_mib + (self.nccl_mib if collective else 0)


# NCCL: not recorded (one GPU). Default NCCL_BUFFSIZE 4 MiB (Simple) + ~4.5 MiB LL128 + 0.25 MiB
# LL per ring peer, two peers, up to 32 channels on NVLink: 32 x 2 x 8.75 MiB = 560 MiB.
NCCL_ALLOWANCE_MIB = 560

OVERHEADS: dict[str, Overhead] = {
    "H100-80GB": Overhead(
        "H100-80GB", context_mib=518, workspace_mib=196, nccl_mib=NCCL_ALLOWANCE_MIB, reserved_mib=480,
        source="recorded on an H100 80GB HBM3 (driver 580.159.04, CUDA 13.0): context 518 MiB with 0 "
               "bytes allocated by PyTorch; 714 MiB per process beyond 6 and 10 GiB of ballast; "
               "480 MiB used on the idle GPU; NCCL not recorded (560 MiB allowance)"),
}
DEFAULT_MODEL = "H100-80GB"


def overhead_for(model: str | None) -> tuple[Overhead, bool]:
    """The overhead of ``model`` and whether it was recorded on that model (else the H100's)."""
    if model in OVERHEADS:
        return OVERHEADS[model], True
    return OVERHEADS[DEFAULT_MODEL], False


def derive_overhead(fixtures: Path, ballast_mib: tuple[int, ...] = (6144, 10240)) -> dict[str, int]:
    """Context, workspace and driver-reserved MiB from the H100 recordings, as OVERHEADS states.

    context: the largest "this process has X MiB memory in use" where PyTorch had 0 bytes
    allocated (sharing-mps-and-caps.log); workspace: per-process NVML figure minus its ballast
    in the two-tenant series (6 and 10 GiB ballast, README), minus the context; reserved: device
    memory used while no process ran.
    """
    log = (fixtures / "sharing-mps-and-caps.log").read_text()
    contexts = [float(m.group(1)) for m in re.finditer(
        r"this process has ([\d.]+) MiB memory in use\. [^\"]*?0 bytes is allocated by PyTorch", log)]
    series = json.loads((fixtures / "nvml_samples_2tenants.json").read_text())
    per_process = sorted({p["used_mib"] for s in series for p in s["procs"]})
    beyond = [used - ballast for used, ballast in zip(per_process, sorted(ballast_mib))]
    idle = [s["mem_used_mib"] for s in series if not s["procs"]]
    context = math.ceil(max(contexts))
    return {"context_mib": context, "workspace_mib": max(beyond) - context, "reserved_mib": min(idle),
            "per_process_mib": max(beyond)}


@dataclass(frozen=True, slots=True)
class MemoryContract:
    """The four limits of one slice on one accelerator (MiB unless said otherwise)."""

    slice_mib: int
    device_mib: int
    usable_mib: int  # what processes can get: device minus the driver's reserve
    margin_mib: int
    watchdog_mib: int  # = slice
    mps_pinned_mib: int  # <= watchdog
    framework_cap_mib: int  # < MPS pinned: torch's per-process cap, vLLM's budget
    torch_fraction: float  # of torch's total (= usable), for set_per_process_memory_fraction
    vllm_utilization: float  # vLLM gpu_memory_utilization
    overhead: Overhead
    recorded: bool  # the margin was recorded on this model

    @property
    def fits(self) -> bool:
        return self.framework_cap_mib > 0

    def describe(self) -> str:
        origin = "recorded" if self.recorded else f"assumed from the {self.overhead.model} recording"
        base = (f"slice {self.slice_mib} MiB" if self.slice_mib <= self.usable_mib
                else f"usable {self.usable_mib} MiB of the device")
        text = (f"framework cap {self.framework_cap_mib} MiB (torch fraction {self.torch_fraction:.4f}, "
                f"vLLM gpu_memory_utilization {self.vllm_utilization:.3f}) = {base} "
                f"- margin {self.margin_mib} MiB ({origin})")
        return text if self.fits else text + "; the slice is smaller than the margin: CUDA will not fit"


def _floor(value: float, places: int) -> float:
    scale = 10 ** places
    return max(0.0, math.floor(value * scale) / scale)


def memory_contract(slice_mib: int, device_mib: int, model: str | None = None, *,
                    collective: bool = False) -> MemoryContract:
    """The contract for a slice of ``slice_mib`` on a ``device_mib`` accelerator of ``model``."""
    overhead, recorded = overhead_for(model)
    usable = max(1, device_mib - overhead.reserved_mib)
    effective = min(slice_mib, usable)  # a whole device still cannot use the driver's reserve
    margin = overhead.margin(collective)
    cap = max(0, effective - margin)
    fraction = _floor(cap / usable, 4)
    utilization = _floor(cap / usable, 3)
    return MemoryContract(slice_mib=slice_mib, device_mib=device_mib, usable_mib=usable,
                          margin_mib=margin, watchdog_mib=slice_mib, mps_pinned_mib=slice_mib,
                          framework_cap_mib=math.floor(fraction * usable), torch_fraction=fraction,
                          vllm_utilization=utilization, overhead=overhead, recorded=recorded)
