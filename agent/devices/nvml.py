"""NVIDIA backend over NVML (``nvidia-ml-py``, ``import pynvml``): identity, telemetry, processes.

The NVML module is a constructor parameter so tests can replay real recordings through this
exact code. Every query runs on its own: a device that answers Not Supported (the H100 does
for fan speed, NUMA id and NVLink) or Not Found (process utilisation with no process) loses
that field only. With MIG on, each MIG device is a schedulable accelerator of its own.
Under MPS, NVML lists only the MPS server, not the clients: per-job attribution then has to
come from elsewhere (see docs/agent.md).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from agent.devices.base import BackendUnavailable, ProcessUsage
from agent.devices.profiles import normalise_model
from controlplane.core.wire import AcceleratorInfo, AcceleratorSample

MIB = 1024 * 1024
NO_DRIVER_HINT = "start with --simulate 1x1xH100-80GB (or another simulate spec) to use simulated GPUs"
CRITICAL_XIDS = frozenset({48, 61, 62, 63, 64, 74, 79, 92, 94, 95, 119, 120, 140})
_XID_EVENT = 0x8  # nvmlEventTypeXidCriticalError


@dataclass(slots=True)
class _Handle:
    """One schedulable accelerator: a GPU, or a MIG device with its parent."""

    handle: Any
    info: AcceleratorInfo
    lost: bool = False
    xid_count: int = 0
    last_xid: int = 0


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class NvmlBackend:
    """The NVIDIA GPUs (and MIG devices) of this machine."""

    name = "nvml"

    def __init__(self, nvml: Any | None = None, *, events: bool = True) -> None:
        if nvml is None:
            try:
                import pynvml as nvml  # type: ignore[no-redef]
            except ImportError:
                raise BackendUnavailable(
                    f"nvidia-ml-py is not installed (pip install nvidia-ml-py); {NO_DRIVER_HINT}"
                ) from None
        self._nvml = nvml
        self._lock = threading.Lock()
        try:
            nvml.nvmlInit()
        except nvml.NVMLError as exc:
            raise BackendUnavailable(self._init_message(exc)) from None
        self._devices: list[_Handle] = []
        self._by_uuid: dict[str, _Handle] = {}
        self._physical: list[tuple[Any, list[_Handle]]] = []  # GPU handle -> its schedulables
        self._proc_ts: dict[int, int] = {}
        self._events = None
        self._scan()
        if events:
            self._register_events()

    def _init_message(self, exc: Exception) -> str:
        code = getattr(exc, "value", None)
        n = self._nvml
        if code in (n.NVML_ERROR_LIBRARY_NOT_FOUND, n.NVML_ERROR_DRIVER_NOT_LOADED):
            return f"no NVIDIA driver found (libnvidia-ml.so: {exc}); {NO_DRIVER_HINT}"
        if code == n.NVML_ERROR_NO_PERMISSION:
            return f"NVML refused access ({exc}): run the agent with access to /dev/nvidia*"
        return f"NVML failed to initialise ({exc}); {NO_DRIVER_HINT}"

    # ---- helpers -----------------------------------------------------------------------
    def _try(self, fn_name: str, *args: Any) -> Any:
        """Call one NVML query; None when the device does not support / have it."""
        try:
            return getattr(self._nvml, fn_name)(*args)
        except self._nvml.NVMLError as exc:
            if getattr(exc, "value", None) == self._nvml.NVML_ERROR_GPU_IS_LOST:
                raise
            return None
        except (AttributeError, NotImplementedError, TypeError):
            return None  # an older nvidia-ml-py without this function

    def _identity(self, handle: Any, index: int, labels: dict[str, str]) -> AcceleratorInfo:
        n = self._nvml
        name = _text(n.nvmlDeviceGetName(handle))
        memory = self._try("nvmlDeviceGetMemoryInfo", handle)
        memory_mib = int(memory.total // MIB) if memory is not None else 0
        pci = self._try("nvmlDeviceGetPciInfo_v3", handle) or self._try("nvmlDeviceGetPciInfo", handle)
        cc = self._try("nvmlDeviceGetCudaComputeCapability", handle)
        serial = self._try("nvmlDeviceGetSerial", handle)
        return AcceleratorInfo(
            uuid=_text(n.nvmlDeviceGetUUID(handle)),
            index=index,
            vendor="nvidia",
            model=normalise_model(name, memory_mib),
            name=name,
            memory_mib=memory_mib,
            serial=_text(serial) if serial else None,
            pci_bus_id=_text(pci.busId) if pci is not None else None,
            compute_capability=f"{cc[0]}.{cc[1]}" if cc else None,
            numa_node=self._try("nvmlDeviceGetNumaNodeId", handle),
            interconnect_domain=self._nvlink_domain(handle),
            labels=labels,
        )

    def _nvlink_domain(self, handle: Any) -> str | None:
        links = getattr(self._nvml, "NVML_NVLINK_MAX_LINKS", 18)
        for link in range(links):
            if self._try("nvmlDeviceGetNvLinkState", handle, link) == 1:
                return "nvlink"
        return None

    def _scan(self) -> None:
        n = self._nvml
        labels = {}
        driver = self._try("nvmlSystemGetDriverVersion")
        if driver:
            labels["driver_version"] = _text(driver)
        schedulable = 0
        for gpu_index in range(n.nvmlDeviceGetCount()):
            handle = n.nvmlDeviceGetHandleByIndex(gpu_index)
            mode = self._try("nvmlDeviceGetMigMode", handle)
            mig_on = bool(mode) and mode[0] == getattr(n, "NVML_DEVICE_MIG_ENABLE", 1)
            base = dict(labels, gpu_index=str(gpu_index), mig="enabled" if mig_on else "disabled")
            members: list[_Handle] = []
            if not mig_on:
                members.append(_Handle(handle, self._identity(handle, schedulable, base)))
                schedulable += 1
            else:
                parent = self._identity(handle, gpu_index, base)
                for mig_index in range(self._try("nvmlDeviceGetMaxMigDeviceCount", handle) or 0):
                    mig = self._try("nvmlDeviceGetMigDeviceHandleByIndex", handle, mig_index)
                    if mig is None:
                        continue  # that MIG slot holds no device
                    info = self._identity(mig, schedulable, dict(base, mig_index=str(mig_index)))
                    info.mig_parent_uuid = parent.uuid
                    for inherited in ("serial", "pci_bus_id", "compute_capability", "numa_node"):
                        if getattr(info, inherited) is None:
                            setattr(info, inherited, getattr(parent, inherited))
                    members.append(_Handle(mig, info))
                    schedulable += 1
            self._physical.append((handle, members))
            self._devices.extend(members)
        self._by_uuid = {d.info.uuid: d for d in self._devices}

    def _register_events(self) -> None:
        n = self._nvml
        try:
            events = n.nvmlEventSetCreate()
        except (n.NVMLError, AttributeError):
            return
        registered = False
        for handle, _members in self._physical:
            supported = self._try("nvmlDeviceGetSupportedEventTypes", handle) or 0
            if not supported & _XID_EVENT:
                continue
            try:
                n.nvmlDeviceRegisterEvents(handle, _XID_EVENT, events)
                registered = True
            except n.NVMLError:
                pass  # e.g. Not Supported inside some VMs: no XID counts for this GPU
        self._events = events if registered else None

    def _drain_xids(self) -> None:
        """Count the XID events NVML queued since the last sample (never blocks)."""
        if self._events is None:
            return
        n = self._nvml
        for _ in range(1000):
            try:
                data = n.nvmlEventSetWait(self._events, 0)
            except n.NVMLError:
                return  # Timeout: nothing queued
            try:
                uuid = _text(n.nvmlDeviceGetUUID(data.device))
            except n.NVMLError:
                continue
            for handle, members in self._physical:
                if members and (members[0].info.mig_parent_uuid or members[0].info.uuid) == uuid:
                    for member in members:
                        member.xid_count += 1
                        member.last_xid = int(data.eventData)

    # ---- DeviceBackend -----------------------------------------------------------------
    def discover(self) -> list[AcceleratorInfo]:
        return [d.info.model_copy(deep=True) for d in self._devices]

    def device_minors(self) -> dict[str, int]:
        """uuid -> N of /dev/nvidiaN (a MIG device: its parent GPU's node), for device rules."""
        out: dict[str, int] = {}
        for handle, members in self._physical:
            minor = self._try("nvmlDeviceGetMinorNumber", handle)
            if minor is not None:
                out.update({m.info.uuid: int(minor) for m in members})
        return out

    def sample(self) -> list[AcceleratorSample]:
        with self._lock:
            self._drain_xids()
            return [self._sample_one(d) for d in self._devices]

    def _sample_one(self, dev: _Handle) -> AcceleratorSample:
        n, h = self._nvml, dev.handle
        sample = AcceleratorSample(uuid=dev.info.uuid, ts=time.time(), xid_errors=dev.xid_count,
                                   last_xid=dev.last_xid)
        try:
            util = self._try("nvmlDeviceGetUtilizationRates", h)
            if util is not None:
                sample.gpu_util_pct = float(util.gpu)
                sample.mem_util_pct = float(util.memory)
            memory = self._try("nvmlDeviceGetMemoryInfo", h)
            if memory is not None:
                sample.memory_used_mib = round(memory.used / MIB, 1)
            power = self._try("nvmlDeviceGetPowerUsage", h)
            sample.power_w = None if power is None else power / 1000.0
            energy = self._try("nvmlDeviceGetTotalEnergyConsumption", h)
            sample.energy_j = None if energy is None else energy / 1000.0
            temp = self._try("nvmlDeviceGetTemperature", h, n.NVML_TEMPERATURE_GPU)
            sample.temperature_c = None if temp is None else float(temp)
            clock = self._try("nvmlDeviceGetClockInfo", h, n.NVML_CLOCK_SM)
            sample.sm_clock_mhz = None if clock is None else float(clock)
            sample.throttle_reasons = self._try("nvmlDeviceGetCurrentClocksEventReasons", h)
            sample.ecc_errors = self._try(
                "nvmlDeviceGetTotalEccErrors", h, n.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, n.NVML_VOLATILE_ECC
            )
            rows = self._try("nvmlDeviceGetRemappedRows", h)  # (corr, uncorr, pending, failed)
            remap_failed = bool(rows) and bool(rows[3])
            sample.healthy = not dev.lost and not remap_failed and dev.last_xid not in CRITICAL_XIDS
        except n.NVMLError:  # GPU is lost
            dev.lost = True
            sample.healthy = False
        return sample

    def processes(self) -> list[ProcessUsage]:
        out: list[ProcessUsage] = []
        with self._lock:
            for dev in self._devices:
                try:
                    out.extend(self._processes_of(dev))
                except self._nvml.NVMLError:
                    dev.lost = True
        return out

    def _processes_of(self, dev: _Handle) -> list[ProcessUsage]:
        procs = self._try("nvmlDeviceGetComputeRunningProcesses", dev.handle) or []
        if not procs:
            return []
        key = id(dev)
        since = self._proc_ts.get(key, 0)
        util = self._try("nvmlDeviceGetProcessUtilization", dev.handle, since) or []
        sm_by_pid: dict[int, tuple[int, float]] = {}
        for s in util:
            if s.pid not in sm_by_pid or s.timeStamp >= sm_by_pid[s.pid][0]:
                sm_by_pid[s.pid] = (s.timeStamp, float(s.smUtil))
        if util:
            self._proc_ts[key] = max(s.timeStamp for s in util)
        result = []
        for p in procs:
            used = p.usedGpuMemory
            result.append(ProcessUsage(
                pid=int(p.pid),
                accelerator_uuid=dev.info.uuid,
                memory_used_mib=0.0 if used is None else round(used / MIB, 1),
                sm_util_pct=sm_by_pid[p.pid][1] if p.pid in sm_by_pid else None,
            ))
        return result

    def health(self) -> dict[str, bool]:
        return {s.uuid: s.healthy for s in self.sample()}

    def close(self) -> None:
        n = self._nvml
        try:
            if self._events is not None:
                n.nvmlEventSetFree(self._events)
            n.nvmlShutdown()
        except (n.NVMLError, AttributeError):
            pass


def from_spec(args: str, options: dict[str, Any]) -> NvmlBackend:
    """Factory for ``open_backend("nvml")``."""
    if args:
        raise BackendUnavailable(f"the nvml backend takes no arguments, got 'nvml:{args}'")
    unknown = set(options) - {"nvml", "events", "seed", "node"}
    if unknown:
        raise BackendUnavailable(f"nvml backend: unknown options {sorted(unknown)}")
    return NvmlBackend(options.get("nvml"), events=options.get("events", True))
