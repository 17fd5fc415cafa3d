"""Simulated accelerators whose utilisation, memory and power follow the jobs attached to them.

Lets the whole pool run on a laptop and in tests. Identity and idle figures follow the
recorded H100 (UUID format "GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx", name from the
profile, ~70 W idle, 480 MiB held by the driver). Everything is deterministic given
``seed`` and the ``clock`` passed in (the only randomness is a seeded jitter of a few %).

How the agent runtime (B2) drives it:
  * ``attach(pid, uuid, compute_milli, memory_mib, memory_file=None, used_mib=None)`` after it
    starts a job process on a slice; ``detach(pid)`` when it stops (a pid that has exited is
    dropped on its own, as NVML does). One pid may be attached to several accelerators.
  * A job process uses ``busy * compute_milli / 10`` % of the SM (its slice's share; busy=1)
    and, unless told otherwise, 60 % of its slice memory.
  * Declared memory: the runtime gives the job env ``GPUPOOL_SIM_MEMORY_FILE=<path>`` and passes
    the same path as ``memory_file``; whatever number of MiB the job writes there (e.g.
    ``echo 9000 > $GPUPOOL_SIM_MEMORY_FILE``) is its used memory from the next ``processes()`` /
    ``sample()`` on. A test job can so pretend to exceed its slice, and the memory watchdog sees
    it through ``processes()`` exactly as it would see NVML's per-process figures.
    ``set_usage(pid, used_mib=..., busy=...)`` does the same from inside the agent.
  * Faults for tests: ``inject_xid(uuid, code)`` (a critical XID marks it unhealthy) and
    ``set_healthy(uuid, False)``; ``lose(uuid)``: it falls off the bus (unhealthy, and gone
    from ``discover()``, so a re-registration no longer lists it).
  * Faults into a running agent: with ``GPUPOOL_SIM_FAULTS_FILE`` set (or ``faults_file=``), the
    backend applies each new line appended to that file at its next sample: ``xid GPU CODE``,
    ``lost GPU`` or ``healthy GPU``, GPU being an index or a UUID (``echo "xid 0 79" >> $FILE``).
    A restarted agent replays the whole file, so a lost GPU stays lost.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from agent.devices.base import BackendUnavailable, ProcessUsage
from agent.devices.profiles import Profile, profile_for
from controlplane.core.wire import AcceleratorInfo, AcceleratorSample

log = logging.getLogger("gpupool.agent.simulated")
MEMORY_FILE_ENV = "GPUPOOL_SIM_MEMORY_FILE"
FAULTS_FILE_ENV = "GPUPOOL_SIM_FAULTS_FILE"
DEFAULT_USED_FRACTION = 0.6
# XIDs that mean the GPU needs attention (DCGM's list of "fatal" ones, abridged).
CRITICAL_XIDS = frozenset({48, 61, 62, 63, 64, 74, 79, 92, 94, 95, 119, 120, 140})


@dataclass(slots=True)
class _Tenant:
    pid: int
    uuid: str
    compute_milli: int
    memory_mib: int
    used_mib: float
    memory_file: str | None
    busy: float = 1.0


@dataclass(slots=True)
class _Device:
    info: AcceleratorInfo
    energy_j: float
    healthy: bool = True
    xid_count: int = 0
    last_xid: int = 0
    lost: bool = False


def _hex(seed: int, node: str, key: str) -> str:
    return hashlib.sha256(f"{seed}:{node}:{key}".encode()).hexdigest()


def _uuid(seed: int, node: str, index: int) -> str:
    h = _hex(seed, node, f"gpu{index}")
    return f"GPU-{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
        return state not in (b"Z", b"X")
    except (OSError, IndexError):
        return True


class SimulatedBackend:
    """``gpus`` simulated accelerators of one ``model`` on node ``node``."""

    name = "simulated"

    def __init__(
        self,
        gpus: int = 1,
        model: str = "H100-80GB",
        *,
        seed: int = 0,
        node: str = "sim",
        clock: Callable[[], float] = time.time,
        track_liveness: bool = True,
        faults_file: str | None = None,
    ) -> None:
        if not 1 <= gpus <= 64:
            raise BackendUnavailable(f"simulated backend: gpu count must be 1..64, got {gpus}")
        try:
            self.profile: Profile = profile_for(model)
        except ValueError as exc:
            raise BackendUnavailable(f"simulated backend: {exc}") from None
        self._clock = clock
        self._rng = random.Random(seed)
        self._track_liveness = track_liveness
        self._lock = threading.Lock()
        self._tenants: dict[tuple[int, str], _Tenant] = {}
        self._devices: dict[str, _Device] = {}
        self._last_ts: float | None = None
        p = self.profile
        for index in range(gpus):
            uuid = _uuid(seed, node, index)
            serial = str(int(_hex(seed, node, f"serial{index}")[:12], 16))[:13].rjust(13, "1")
            info = AcceleratorInfo(
                uuid=uuid,
                index=index,
                vendor=p.vendor,
                model=p.model,
                name=p.name,
                memory_mib=p.memory_mib,
                serial=serial,
                pci_bus_id=f"00000000:{0x18 + 0x10 * index:02X}:00.0",
                compute_capability=p.compute_capability,
                numa_node=0 if index < max(1, gpus // 2) else 1,
                labels={"simulated": "true"},
            )
            start_energy = 1000.0 + int(_hex(seed, node, f"energy{index}")[:6], 16) % 5000
            self._devices[uuid] = _Device(info=info, energy_j=start_energy)
        self._faults = FaultsFile(faults_file or os.environ.get(FAULTS_FILE_ENV) or None, self)

    # ---- runtime API -------------------------------------------------------------------
    def attach(
        self,
        pid: int,
        uuid: str,
        compute_milli: int = 1000,
        memory_mib: int | None = None,
        *,
        memory_file: str | None = None,
        used_mib: float | None = None,
    ) -> None:
        """Account process ``pid`` as running on accelerator ``uuid`` with that slice."""
        device = self._devices.get(uuid)
        if device is None:
            raise ValueError(f"no simulated accelerator {uuid!r} on this node")
        if not 0 <= compute_milli <= 1000:
            raise ValueError(f"compute_milli must be 0..1000, got {compute_milli}")
        limit = device.info.memory_mib if memory_mib is None else memory_mib
        used = DEFAULT_USED_FRACTION * limit if used_mib is None else used_mib
        with self._lock:
            self._tenants[(pid, uuid)] = _Tenant(pid, uuid, compute_milli, limit, used, memory_file)

    def detach(self, pid: int) -> None:
        """Forget ``pid`` on every accelerator (no error if it was not attached)."""
        with self._lock:
            for key in [k for k in self._tenants if k[0] == pid]:
                del self._tenants[key]

    def set_usage(self, pid: int, *, used_mib: float | None = None, busy: float | None = None) -> None:
        """Change what ``pid`` uses: memory in MiB and/or busy fraction (0 = idle, 1 = its share)."""
        with self._lock:
            for tenant in self._tenants.values():
                if tenant.pid == pid:
                    if used_mib is not None:
                        tenant.used_mib = float(used_mib)
                    if busy is not None:
                        tenant.busy = min(1.0, max(0.0, float(busy)))

    def inject_xid(self, uuid: str, code: int) -> None:
        device = self._devices[uuid]
        device.xid_count += 1
        device.last_xid = code
        if code in CRITICAL_XIDS:
            device.healthy = False

    def set_healthy(self, uuid: str, healthy: bool) -> None:
        device = self._devices[uuid]
        device.healthy = healthy
        if healthy:
            device.lost, device.last_xid = False, 0

    def lose(self, uuid: str) -> None:
        """The GPU falls off the bus: unhealthy, and no longer discovered."""
        device = self._devices[uuid]
        device.healthy, device.lost = False, True

    def device(self, ref: str) -> str:
        """The UUID of the GPU ``ref`` names (an index or a UUID); KeyError if none."""
        if ref in self._devices:
            return ref
        for uuid, d in self._devices.items():
            if ref.isdigit() and d.info.index == int(ref):
                return uuid
        raise KeyError(f"no simulated GPU {ref!r} on this node")

    # ---- DeviceBackend -----------------------------------------------------------------
    def discover(self) -> list[AcceleratorInfo]:
        self._faults.poll()
        return [d.info.model_copy(deep=True) for d in self._devices.values() if not d.lost]

    def device_minors(self) -> dict[str, int]:
        """uuid -> N of the /dev/nvidiaN a simulated GPU stands for (its index)."""
        return {uuid: d.info.index for uuid, d in self._devices.items()}

    def processes(self) -> list[ProcessUsage]:
        with self._lock:
            tenants = self._live_tenants()
        return [
            ProcessUsage(t.pid, t.uuid, round(self._used(t), 1), round(self._sm(t), 1))
            for t in tenants
        ]

    def sample(self) -> list[AcceleratorSample]:
        self._faults.poll()
        now = self._clock()
        with self._lock:
            tenants = self._live_tenants()
            dt = 0.0 if self._last_ts is None else max(0.0, now - self._last_ts)
            self._last_ts = now
            out = []
            for uuid, device in self._devices.items():
                mine = [t for t in tenants if t.uuid == uuid]
                out.append(self._sample_one(now, dt, device, mine))
        return out

    def health(self) -> dict[str, bool]:
        self._faults.poll()
        return {uuid: d.healthy for uuid, d in self._devices.items()}

    def close(self) -> None:
        with self._lock:
            self._tenants.clear()

    # ---- model -------------------------------------------------------------------------
    def _live_tenants(self) -> list[_Tenant]:
        if self._track_liveness:
            dead = {pid for pid, _ in self._tenants if not _pid_alive(pid)}
            for key in [k for k in self._tenants if k[0] in dead]:
                del self._tenants[key]
        for tenant in self._tenants.values():
            if tenant.memory_file:
                tenant.used_mib = _read_mib(tenant.memory_file, tenant.used_mib)
        return list(self._tenants.values())

    def _used(self, tenant: _Tenant) -> float:
        return min(max(tenant.used_mib, 0.0), float(self._devices[tenant.uuid].info.memory_mib))

    @staticmethod
    def _sm(tenant: _Tenant) -> float:
        return tenant.busy * tenant.compute_milli / 10.0

    def _sample_one(self, now: float, dt: float, device: _Device, tenants: list[_Tenant]) -> AcceleratorSample:
        p = self.profile
        jitter = self._rng.uniform(-1.0, 1.0)
        demand = sum(self._sm(t) for t in tenants)
        util = 0.0 if demand <= 0 else min(100.0, max(0.0, demand + jitter))
        total = device.info.memory_mib
        used = min(float(total), p.idle_used_mib + sum(self._used(t) for t in tenants))
        power = p.idle_w + (p.tdp_w - p.idle_w) * 0.95 * util / 100.0 + abs(jitter) * 0.01 * p.idle_w
        device.energy_j += power * dt
        return AcceleratorSample(
            uuid=device.info.uuid,
            ts=now,
            gpu_util_pct=round(util, 1),
            mem_util_pct=round(util / 3.0, 1),
            memory_used_mib=round(used, 1),
            power_w=round(power, 2),
            energy_j=round(device.energy_j, 3),
            temperature_c=round(p.idle_temp_c + (p.max_temp_c - p.idle_temp_c) * util / 100.0, 1),
            sm_clock_mhz=float(p.max_sm_clock_mhz if util > 0 else p.idle_sm_clock_mhz),
            throttle_reasons=0 if util > 0 else 1,  # 1 = GPU idle, as NVML reports
            ecc_errors=0,
            xid_errors=device.xid_count,
            last_xid=device.last_xid,
            healthy=device.healthy,
        )


class FaultsFile:
    """Applies the fault lines appended to a file (``xid GPU CODE``, ``lost GPU``, ``healthy GPU``)."""

    def __init__(self, path: str | None, backend: SimulatedBackend) -> None:
        self.path, self.backend = path, backend
        self.applied = 0  # lines applied so far
        self.seen: tuple[int, int] | None = None  # (mtime_ns, size) when last read

    def poll(self) -> None:
        if not self.path:
            return
        try:
            st = os.stat(self.path)
            if (st.st_mtime_ns, st.st_size) == self.seen:
                return
            with open(self.path, encoding="utf-8") as f:
                lines = f.read().splitlines()
        except OSError:
            return
        self.seen = (st.st_mtime_ns, st.st_size)
        if len(lines) < self.applied:  # rewritten: start over
            self.applied = 0
        for line in lines[self.applied:]:
            self._apply(line.split("#", 1)[0].split())
        self.applied = len(lines)

    def _apply(self, words: list[str]) -> None:
        if not words:
            return
        try:
            uuid = self.backend.device(words[1])
            if words[0] == "xid" and len(words) == 3:
                self.backend.inject_xid(uuid, int(words[2]))
            elif words[0] == "lost" and len(words) == 2:
                self.backend.lose(uuid)
            elif words[0] == "healthy" and len(words) == 2:
                self.backend.set_healthy(uuid, True)
            else:
                raise ValueError("use 'xid GPU CODE', 'lost GPU' or 'healthy GPU'")
            log.warning("simulated fault applied: %s", " ".join(words))
        except (IndexError, KeyError, ValueError) as exc:
            log.warning("ignored fault line %r in %s: %s", " ".join(words), self.path, exc)


def _read_mib(path: str, fallback: float) -> float:
    """The MiB a job declared in its memory file; the last value if the file is absent or partial."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read().strip()
        return float(text) if text else fallback
    except (OSError, ValueError):
        return fallback


def from_spec(args: str, options: dict) -> SimulatedBackend:
    """Factory for ``open_backend("simulate:NODESxGPUSxMODEL")``; this agent is one of the nodes."""
    from agent.devices import parse_simulate_spec

    _nodes, gpus, model = parse_simulate_spec(args)
    allowed = {"seed", "node", "clock", "track_liveness", "faults_file"}
    unknown = set(options) - allowed
    if unknown:
        raise BackendUnavailable(f"simulated backend: unknown options {sorted(unknown)}")
    return SimulatedBackend(gpus, model, **options)
