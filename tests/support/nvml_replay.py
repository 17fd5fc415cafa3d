"""A ``pynvml``-shaped module that replays recordings of a real GPU (tests, dry runs, demos).

Built from ../shared/fixtures/nvml-h100 (beside the repository): ``nvml_snapshot.json`` answers every identity and
idle query exactly as the H100 did (values and NVML errors such as Not Supported / Not Found,
raised as pynvml's own exception classes), and ``nvml_samples_2tenants.json`` is a time series
(utilisation, memory, power, per-process memory and SM use) that ``advance()`` steps through.
``mig=["1g.10gb", ...]`` turns MIG on with devices made from the card's recorded MIG profiles;
``inject_xid(gpu, code)`` queues an XID event. ``gpus=2`` adds copies of the recorded card (own
UUID, index and minor number) and ``placement={pid: gpu}`` shows a recorded process on another
of them (an escape from its slice); ``mps=True`` replays what NVML showed while two MPS clients
ran (only the MPS server). Pass the module as ``NvmlBackend(nvml=...)``.
"""

from __future__ import annotations

import hashlib
import json
import os
import types
from collections import deque
from pathlib import Path
from types import SimpleNamespace as NS
from typing import Any

import pynvml as _real  # for constants and exception classes only; needs no driver

# the recordings live beside the repository (../shared), not in it; GPUPOOL_NVML_FIXTURES overrides
FIXTURES = Path(os.environ.get("GPUPOOL_NVML_FIXTURES",
                               Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "nvml-h100"))
SUPPORTED_EVENT_TYPES = 65439  # nvmlDeviceGetSupportedEventTypes on the recorded H100
MIB = 1024 * 1024


def _ns(value: Any) -> Any:
    if isinstance(value, dict):
        return NS(**{k: _ns(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(_ns(v) for v in value)
    return value


class _Device:
    def __init__(self, index: int, data: dict, parent: _Device | None = None) -> None:
        self.index = index
        self.data = data
        self.parent = parent
        self.mig: list[_Device] = []


class ReplayNvml(types.ModuleType):
    """The fake module; attributes not defined here come from the real pynvml (constants, errors)."""

    def __init__(self, fixtures: Path = FIXTURES, *, mig: list[str] | None = None,
                 samples: bool = True, gpus: int = 1, placement: dict[int, int] | None = None,
                 mps: bool = False) -> None:
        super().__init__("pynvml_replay")
        self.snapshot = json.loads((fixtures / "nvml_snapshot.json").read_text())
        self.series = json.loads((fixtures / "nvml_samples_2tenants.json").read_text()) if samples else []
        if mps:
            self.series = _mps_series(fixtures)
        self.placement = placement or {}
        self.position = -1  # -1: the idle snapshot; 0.. : index into the time series
        self.initialised = False
        self.events: deque = deque()
        recorded = self.snapshot["devices"][0]
        self.devices = [_Device(i, d) for i, d in enumerate(self.snapshot["devices"])]
        self.devices += [_Device(i, _copy_of(recorded, i)) for i in range(len(self.devices), gpus)]
        for parent in self.devices:
            if mig:
                parent.mig = [self._mig_device(parent, j, p) for j, p in enumerate(mig)]

    def __getattr__(self, name: str) -> Any:
        if name.startswith(("NVML", "nvmlEventType", "NVMLError")):
            return getattr(_real, name)
        raise AttributeError(f"the replayed pynvml has no {name} (not recorded)")

    # ---- replay control ----------------------------------------------------------------
    def advance(self) -> bool:
        """Step to the next recorded sample; False when the series is over."""
        if self.position + 1 >= len(self.series):
            return False
        self.position += 1
        return True

    @property
    def current(self) -> dict | None:
        return self.series[self.position] if self.position >= 0 else None

    def inject_xid(self, gpu_index: int, code: int) -> None:
        self.events.append(NS(device=self.devices[gpu_index], eventType=0x8, eventData=code,
                              gpuInstanceId=0xFFFFFFFF, computeInstanceId=0xFFFFFFFF))

    def _mig_device(self, parent: _Device, index: int, profile: str) -> _Device:
        recorded = [p["ok"] for p in parent.data["mig_profiles"].values() if "ok" in p]
        match = [p for p in recorded if p["name"] == f"MIG {profile}"]
        if not match:
            names = ", ".join(p["name"].removeprefix("MIG ") for p in recorded)
            raise ValueError(f"MIG profile {profile!r} was not recorded; recorded: {names}")
        h = hashlib.sha256(f"{parent.index}:{index}:{profile}".encode()).hexdigest()
        return _Device(index, {
            "name": f"{parent.data['nvmlDeviceGetName']['ok']} MIG {profile}",
            "uuid": f"MIG-{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}",
            "memory_mib": match[0]["memorySizeMB"],
        }, parent)

    # ---- answering -----------------------------------------------------------------------
    def _check(self) -> None:
        if not self.initialised:
            raise _real.NVMLError(_real.NVML_ERROR_UNINITIALIZED)

    def _recorded(self, dev: _Device, key: str) -> Any:
        self._check()
        if dev.parent is not None:  # MIG devices answer only identity, memory and processes
            raise _real.NVMLError(_real.NVML_ERROR_NOT_SUPPORTED)
        entry = dev.data.get(key)
        if entry is None:
            raise AttributeError(f"{key} was not recorded")
        return self._unwrap(entry)

    @staticmethod
    def _unwrap(entry: dict) -> Any:
        if "ok" in entry:
            return _ns(entry["ok"])
        if "code" in entry:
            raise _real.NVMLError(entry["code"])
        raise _real.NVMLError(_real.NVML_ERROR_UNKNOWN)

    def nvmlInit(self) -> None:
        self.initialised = True

    def nvmlShutdown(self) -> None:
        self._check()
        self.initialised = False

    def nvmlSystemGetDriverVersion(self) -> str:
        self._check()
        return self._unwrap(self.snapshot["system"]["driver"])

    def nvmlDeviceGetCount(self) -> int:
        self._check()
        return max(self._unwrap(self.snapshot["system"]["count"]), len(self.devices))

    def nvmlDeviceGetHandleByIndex(self, index: int) -> _Device:
        self._check()
        if not 0 <= index < len(self.devices):
            raise _real.NVMLError(_real.NVML_ERROR_INVALID_ARGUMENT)
        return self.devices[index]

    def nvmlDeviceGetName(self, dev: _Device) -> str:
        return dev.data["name"] if dev.parent else self._recorded(dev, "nvmlDeviceGetName")

    def nvmlDeviceGetUUID(self, dev: _Device) -> str:
        return dev.data["uuid"] if dev.parent else self._recorded(dev, "nvmlDeviceGetUUID")

    def nvmlDeviceGetMigMode(self, dev: _Device) -> tuple:
        if dev.mig:
            return (1, 1)
        return self._recorded(dev, "nvmlDeviceGetMigMode")

    def nvmlDeviceGetMaxMigDeviceCount(self, dev: _Device) -> int:
        return 7 if dev.mig else self._recorded(dev, "nvmlDeviceGetMaxMigDeviceCount")

    def nvmlDeviceGetMigDeviceHandleByIndex(self, dev: _Device, index: int) -> _Device:
        self._check()
        if index >= len(dev.mig):
            raise _real.NVMLError(_real.NVML_ERROR_NOT_FOUND)
        return dev.mig[index]

    def nvmlDeviceGetMemoryInfo(self, dev: _Device) -> NS:
        if dev.parent is not None:
            used = sum(p.usedGpuMemory for p in self._procs(dev))
            total = dev.data["memory_mib"] * MIB
            return NS(total=total, used=used, free=total - used)
        info = self._recorded(dev, "nvmlDeviceGetMemoryInfo")
        if self.current is not None and "mem_used_mib" in self.current:
            info.used = self.current["mem_used_mib"] * MIB
            if len(self.devices) > 1:  # processes moved between copies: the driver's share + theirs
                idle = self.snapshot["devices"][0]["nvmlDeviceGetMemoryInfo"]["ok"]["used"]
                info.used = idle + sum(p.usedGpuMemory for p in self._procs(dev))
            info.free = info.total - info.used
        return info

    def nvmlDeviceGetUtilizationRates(self, dev: _Device) -> NS:
        rates = self._recorded(dev, "nvmlDeviceGetUtilizationRates")
        if self.current is not None and "util_gpu" in self.current:
            rates = NS(gpu=self.current["util_gpu"], memory=self.current["util_mem"])
        return rates

    def nvmlDeviceGetPowerUsage(self, dev: _Device) -> int:
        power = self._recorded(dev, "nvmlDeviceGetPowerUsage")
        return self.current["power_mw"] if self.current is not None and "power_mw" in self.current else power

    def nvmlDeviceGetTemperature(self, dev: _Device, sensor: int) -> int:
        return self._recorded(dev, "temperature_gpu")

    def nvmlDeviceGetClockInfo(self, dev: _Device, clock: int) -> int:
        key = {_real.NVML_CLOCK_SM: "clock_sm", _real.NVML_CLOCK_MEM: "clock_mem",
               _real.NVML_CLOCK_GRAPHICS: "clock_graphics"}[clock]
        return self._recorded(dev, key)

    def nvmlDeviceGetTotalEccErrors(self, dev: _Device, error_type: int, counter: int) -> int:
        return self._recorded(dev, "ecc_volatile_total")

    def nvmlDeviceGetNvLinkState(self, dev: _Device, link: int) -> int:
        self._recorded(dev, "nvmlDeviceGetName")  # MIG/initialised check
        links = dev.data["nvlink"]
        if link >= len(links):
            raise _real.NVMLError(_real.NVML_ERROR_INVALID_ARGUMENT)
        return self._unwrap(links[link])

    def _procs(self, dev: _Device) -> list[NS]:
        if dev.parent is not None:
            return []  # the recording ran with MIG off: no process on a MIG device
        if self.current is None:
            return list(self._recorded(dev, "nvmlDeviceGetComputeRunningProcesses"))
        return [NS(pid=p["pid"], usedGpuMemory=p["used_mib"] * MIB, gpuInstanceId=0xFFFFFFFF,
                   computeInstanceId=0xFFFFFFFF) for p in self.current["procs"]
                if self.placement.get(p["pid"], 0) == dev.index]

    def nvmlDeviceGetComputeRunningProcesses(self, dev: _Device) -> list[NS]:
        self._check()
        return self._procs(dev)

    def nvmlDeviceGetProcessUtilization(self, dev: _Device, since: int) -> list[NS]:
        if self.current is None:
            return list(self._recorded(dev, "process_utilization"))
        self._recorded(dev, "nvmlDeviceGetName")
        if "proc_util_err" in self.current:
            raise _real.NVMLError(_real.NVML_ERROR_NOT_FOUND)
        ts = int(self.current["t"] * 1e6)
        return [NS(pid=u["pid"], timeStamp=ts, smUtil=u["sm"], memUtil=u["mem"], encUtil=0, decUtil=0)
                for u in self.current.get("proc_util", [])
                if ts > since and self.placement.get(u["pid"], 0) == dev.index]

    def nvmlDeviceGetSupportedEventTypes(self, dev: _Device) -> int:
        self._recorded(dev, "nvmlDeviceGetName")
        return SUPPORTED_EVENT_TYPES

    def nvmlEventSetCreate(self) -> NS:
        self._check()
        return NS(registered=[])

    def nvmlDeviceRegisterEvents(self, dev: _Device, types_: int, event_set: NS) -> None:
        self._check()
        event_set.registered.append((dev, types_))

    def nvmlEventSetWait(self, event_set: NS, timeout_ms: int) -> NS:
        self._check()
        registered = {id(d) for d, _ in event_set.registered}
        while self.events:
            event = self.events.popleft()
            if id(event.device) in registered:
                return event
        raise _real.NVMLError(_real.NVML_ERROR_TIMEOUT)

    def nvmlEventSetFree(self, event_set: NS) -> None:
        self._check()


_PASSTHROUGH = (
    "nvmlDeviceGetSerial", "nvmlDeviceGetPciInfo_v3", "nvmlDeviceGetCudaComputeCapability",
    "nvmlDeviceGetNumaNodeId", "nvmlDeviceGetTotalEnergyConsumption", "nvmlDeviceGetFanSpeed",
    "nvmlDeviceGetCurrentClocksEventReasons", "nvmlDeviceGetRemappedRows", "nvmlDeviceGetIndex",
    "nvmlDeviceGetComputeMode", "nvmlDeviceGetPerformanceState", "nvmlDeviceGetPersistenceMode",
    "nvmlDeviceGetPowerManagementLimit", "nvmlDeviceGetEnforcedPowerLimit", "nvmlDeviceGetArchitecture",
    "nvmlDeviceGetBoardPartNumber", "nvmlDeviceGetVbiosVersion", "nvmlDeviceGetBAR1MemoryInfo",
    "nvmlDeviceGetMinorNumber",
)


def _make_passthrough(key: str):
    def query(self: ReplayNvml, dev: _Device) -> Any:
        return self._recorded(dev, key)

    query.__name__ = key
    return query


for _key in _PASSTHROUGH:
    setattr(ReplayNvml, _key, _make_passthrough(_key))


def _copy_of(recorded: dict, index: int) -> dict:
    """Another card like the recorded one: its own UUID, serial, index, minor number and bus id."""
    h = hashlib.sha256(f"copy:{index}".encode()).hexdigest()
    pci = dict(recorded["nvmlDeviceGetPciInfo_v3"]["ok"], busId=f"00000000:00:{6 + index:02X}.0")
    return {**recorded, "nvmlDeviceGetUUID": {"ok": f"GPU-{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"},
            "nvmlDeviceGetSerial": {"ok": str(int(h[:12], 16))}, "nvmlDeviceGetIndex": {"ok": index},
            "nvmlDeviceGetMinorNumber": {"ok": index}, "nvmlDeviceGetPciInfo_v3": {"ok": pci}}


def _mps_series(fixtures: Path) -> list[dict]:
    """The samples NVML gave while two MPS clients (3 GiB, 5 GiB) ran: the server at most."""
    text = (fixtures / "nvml-latency-and-mps-attribution.log").read_text()
    line = next(ln for ln in text.splitlines() if ln.startswith('{"during_mps_clients"'))
    # only the process list was recorded there; other queries answer as on the idle card
    return [{"t": float(i), "procs": s["nvmlDeviceGetComputeRunningProcesses"], "proc_util_err": "Not Found"}
            for i, s in enumerate(json.loads(line)["during_mps_clients"])]


def replay_module(**kwargs: Any) -> ReplayNvml:
    """A fresh replayed pynvml (see ReplayNvml for the options)."""
    return ReplayNvml(**kwargs)
