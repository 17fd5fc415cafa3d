"""A cgroup per job member: detect v1/v2, apply CPU, memory, pids and device limits, kill it whole.

cgroup v1 (hybrid nodes such as Debian 12 here): one directory per hierarchy under
``<mount>/<parent>/<name>``; devices through ``devices.allow`` rules. cgroup v2: with systemd as
PID 1 the member runs in a transient scope (``systemd-run --scope`` with ``MemoryMax=``,
``CPUQuota=``, ``TasksMax=``, ``DevicePolicy=closed`` + ``DeviceAllow=``: systemd attaches the eBPF
device program); without systemd the agent writes ``memory.max``/``cpu.max``/``pids.max`` itself
and device rules are left to the container runtime. ``enforcement`` says which layer does what.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from agent.sandbox.kill import kill_tree, remove_tree, signal_tree, tree_pids

CFS_PERIOD_US = 100_000
JOIN_V1 = ("cpu", "cpuacct", "memory", "pids", "devices", "freezer")
REQUIRED_V1 = ("cpu", "memory", "pids", "devices")


@dataclass(frozen=True, slots=True)
class Limits:
    """What one member may use on the host; None = not limited."""

    cpu_milli: int | None = None
    memory_mib: int | None = None
    pids_max: int | None = None
    devices: tuple[str, ...] | None = None  # v1 rules like "c 195:0 rw"; None = not restricted


@dataclass(frozen=True, slots=True)
class CgroupSupport:
    version: str  # "v1" | "v2" | "none"
    mounts: dict[str, str] = field(default_factory=dict)  # v1: hierarchy -> mount; v2: {"": mount}
    systemd: bool = False  # v2: systemd is PID 1, so transient scopes are available
    detail: str = ""

    @property
    def usable(self) -> bool:
        return self.version in ("v1", "v2")


def detect_cgroups(mounts_text: str | None = None, *, systemd: bool | None = None) -> CgroupSupport:
    """Which cgroup version this node uses for resource control, from /proc/self/mounts."""
    if mounts_text is None:
        try:
            mounts_text = Path("/proc/self/mounts").read_text()
        except OSError as exc:
            return CgroupSupport("none", detail=f"cannot read /proc/self/mounts: {exc}")
    v1: dict[str, str] = {}
    unified = None
    for line in mounts_text.splitlines():
        parts = line.split()
        if len(parts) < 4:
            continue
        _src, target, fstype, opts = parts[:4]
        if fstype == "cgroup":
            for opt in opts.split(","):
                if opt in JOIN_V1 or opt in ("cpuset", "blkio", "net_cls", "perf_event", "hugetlb") \
                        or opt.startswith("name="):
                    v1[opt] = target
        elif fstype == "cgroup2":
            unified = target
    if any(c in v1 for c in REQUIRED_V1):
        missing = [c for c in REQUIRED_V1 if c not in v1]
        if unified:
            v1.setdefault("unified", unified)
        detail = "cgroup v1" + (f" (no {', '.join(missing)} controller)" if missing else "")
        return CgroupSupport("v1", v1, detail=detail)
    if unified:
        has_systemd = os.path.isdir("/run/systemd/system") if systemd is None else systemd
        return CgroupSupport("v2", {"": unified}, systemd=has_systemd,
                             detail="cgroup v2" + (" with systemd" if has_systemd else " without systemd"))
    return CgroupSupport("none", detail="no cgroup filesystem mounted")


@dataclass(slots=True)
class CgroupUsage:
    cpu_ns: int | None = None
    memory_peak_bytes: int | None = None
    oom_kills: int = 0


def _write(path: Path, value: str) -> None:
    try:
        path.write_text(value)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot write {value.strip()!r} to {path}: {exc.strerror}") from None


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _field(text: str | None, key: str) -> int | None:
    for line in (text or "").splitlines():
        name, _, value = line.partition(" ")
        if name == key and value.strip().isdigit():
            return int(value)
    return None


class JobCgroup:
    """One member's cgroup, named ``<parent>/<name>`` in every hierarchy the node has."""

    def __init__(self, support: CgroupSupport, parent: str, name: str) -> None:
        if not support.usable:
            raise ValueError(f"no usable cgroups: {support.detail}")
        self.support = support
        self.rel = f"{parent.strip('/')}/{name}"
        self.scope_unit: str | None = None
        if support.version == "v2" and support.systemd:
            # systemd names the scope's cgroup after the slice and the unit
            self.scope_unit = f"{parent.strip('/')}-{name}.scope"
            self.rel = f"{parent.strip('/')}.slice/{self.scope_unit}"
        self.dirs = {h: Path(m) / self.rel for h, m in support.mounts.items()}

    # ---- where the processes are -------------------------------------------------------------
    @property
    def version(self) -> str:
        return self.support.version

    def join_files(self) -> list[str]:
        """cgroup.procs files a new member process writes its pid into (none: systemd places it)."""
        if self.scope_unit:
            return []
        if self.version == "v2":
            return [str(self.dirs[""] / "cgroup.procs")]
        return [str(self.dirs[h] / "cgroup.procs") for h in JOIN_V1 if h in self.dirs]

    @property
    def procs_root(self) -> str:
        if self.version == "v2":
            return str(self.dirs[""])
        for h in ("freezer", "pids", "memory", "cpu"):
            if h in self.dirs:
                return str(self.dirs[h])
        raise ValueError("no hierarchy to track the job's processes")

    @property
    def freezer_dir(self) -> str | None:
        return str(self.dirs["freezer"]) if "freezer" in self.dirs else None

    @property
    def kill_file(self) -> str | None:
        return str(self.dirs[""] / "cgroup.kill") if self.version == "v2" else None

    def shim_plan(self) -> dict:
        """What the job's shim needs to place the member here and to kill what it leaves behind."""
        return {"join": self.join_files(), "procs_root": self.procs_root,
                "freezer": self.freezer_dir, "kill_file": self.kill_file}

    # ---- lifecycle ---------------------------------------------------------------------------
    def create(self, limits: Limits) -> dict[str, str]:
        """Make the cgroup and apply ``limits``; returns limit -> how it is enforced."""
        if self.scope_unit:
            return self._scope_enforcement(limits)
        if self.version == "v2":
            return self._create_v2(limits)
        return self._create_v1(limits)

    def _create_v1(self, limits: Limits) -> dict[str, str]:
        out: dict[str, str] = {}
        for h in JOIN_V1:
            if h in self.dirs:
                self.dirs[h].mkdir(parents=True, exist_ok=True)
        cpu, mem, pids, dev = (self.dirs.get(h) for h in ("cpu", "memory", "pids", "devices"))
        if limits.cpu_milli is not None and cpu is not None:
            _write(cpu / "cpu.cfs_period_us", str(CFS_PERIOD_US))
            _write(cpu / "cpu.cfs_quota_us", str(max(1000, limits.cpu_milli * CFS_PERIOD_US // 1000)))
            out["cpu"] = f"cgroup v1 cpu quota {limits.cpu_milli} milli ({limits.cpu_milli / 1000:g} core)"
        if limits.memory_mib is not None and mem is not None:
            value = str(limits.memory_mib * 1024 * 1024)
            _write(mem / "memory.limit_in_bytes", value)
            if (mem / "memory.memsw.limit_in_bytes").exists():  # no swapping past the limit
                _write(mem / "memory.memsw.limit_in_bytes", value)
            out["memory"] = f"cgroup v1 memory limit {limits.memory_mib} MiB (OOM kill past it)"
        if limits.pids_max is not None and pids is not None:
            _write(pids / "pids.max", str(limits.pids_max))
            out["pids"] = f"cgroup v1 pids.max {limits.pids_max}"
        if limits.devices is not None and dev is not None:
            _write(dev / "devices.deny", "a")
            for rule in limits.devices:
                _write(dev / "devices.allow", rule)
            out["devices"] = "cgroup v1 device allow-list: " + ", ".join(limits.devices)
        return self._not_enforced(limits, out)

    def _create_v2(self, limits: Limits) -> dict[str, str]:
        out: dict[str, str] = {}
        root = Path(self.support.mounts[""])
        path = self.dirs[""]
        # enable the controllers on the way down (each level's subtree_control)
        cur = root
        for part in self.rel.split("/"):
            controllers = set((_read(cur / "cgroup.controllers") or "").split())
            wanted = [c for c in ("cpu", "memory", "pids") if c in controllers]
            if wanted:
                _write(cur / "cgroup.subtree_control", " ".join("+" + c for c in wanted))
            cur = cur / part
            cur.mkdir(exist_ok=True)
        if limits.cpu_milli is not None and (path / "cpu.max").exists():
            _write(path / "cpu.max", f"{max(1000, limits.cpu_milli * CFS_PERIOD_US // 1000)} {CFS_PERIOD_US}")
            out["cpu"] = f"cgroup v2 cpu.max {limits.cpu_milli} milli"
        if limits.memory_mib is not None and (path / "memory.max").exists():
            _write(path / "memory.max", str(limits.memory_mib * 1024 * 1024))
            if (path / "memory.swap.max").exists():
                _write(path / "memory.swap.max", "0")
            out["memory"] = f"cgroup v2 memory.max {limits.memory_mib} MiB (OOM kill past it)"
        if limits.pids_max is not None and (path / "pids.max").exists():
            _write(path / "pids.max", str(limits.pids_max))
            out["pids"] = f"cgroup v2 pids.max {limits.pids_max}"
        if limits.devices is not None:
            out["devices"] = ("not enforced by cgroup v2 without systemd (device rules need eBPF); "
                              "give the job an image to have the container runtime enforce them")
        return self._not_enforced(limits, out)

    def _scope_enforcement(self, limits: Limits) -> dict[str, str]:
        out = {k: f"systemd transient scope {self.scope_unit}: {v}" for k, v in
               (("cpu", limits.cpu_milli is not None and f"CPUQuota={limits.cpu_milli / 10:g}%"),
                ("memory", limits.memory_mib is not None and f"MemoryMax={limits.memory_mib}M"),
                ("pids", limits.pids_max is not None and f"TasksMax={limits.pids_max}"),
                ("devices", limits.devices is not None and "DevicePolicy=closed + DeviceAllow"))
               if v}
        return self._not_enforced(limits, out)

    def _not_enforced(self, limits: Limits, out: dict[str, str]) -> dict[str, str]:
        for key, value in (("cpu", limits.cpu_milli), ("memory", limits.memory_mib),
                           ("pids", limits.pids_max)):
            if key not in out:
                out[key] = ("not limited (the start order carries no host share)" if value is None
                            else f"not enforced: no {key} controller ({self.support.detail})")
        return out

    def scope_argv(self, limits: Limits, device_paths: list[str], uid: int | None,
                   gid: int | None) -> list[str]:
        """systemd-run prefix that starts the member in this transient scope (v2 + systemd)."""
        assert self.scope_unit
        slice_name = self.rel.split("/")[0]
        argv = ["systemd-run", "--scope", "--quiet", "--collect", f"--unit={self.scope_unit}",
                f"--slice={slice_name}"]
        props = []
        if limits.cpu_milli is not None:
            props.append(f"CPUQuota={max(1, limits.cpu_milli // 10)}%")
        if limits.memory_mib is not None:
            props += [f"MemoryMax={limits.memory_mib}M", "MemorySwapMax=0"]
        if limits.pids_max is not None:
            props.append(f"TasksMax={limits.pids_max}")
        if limits.devices is not None:
            props += ["DevicePolicy=closed", *(f"DeviceAllow={p} rw" for p in device_paths)]
        for prop in props:
            argv += ["-p", prop]
        if uid is not None:
            argv += [f"--uid={uid}", f"--gid={gid}"]
        return [*argv, "--"]

    def pids(self) -> set[int]:
        return tree_pids(self.procs_root)

    def signal(self, sig: int) -> int:
        return signal_tree(self.procs_root, sig)

    def kill(self, timeout: float = 10.0) -> bool:
        return kill_tree(self.procs_root, freezer_dir=self.freezer_dir, kill_file=self.kill_file,
                         timeout=timeout)

    def usage(self) -> CgroupUsage:
        if self.version == "v2":
            path = self.dirs[""]
            usec = _field(_read(path / "cpu.stat"), "usage_usec")
            peak = _read(path / "memory.peak")
            return CgroupUsage(cpu_ns=None if usec is None else usec * 1000,
                               memory_peak_bytes=int(peak) if peak and peak.strip().isdigit() else None,
                               oom_kills=_field(_read(path / "memory.events"), "oom_kill") or 0)
        acct, mem = self.dirs.get("cpuacct"), self.dirs.get("memory")
        cpu = _read(acct / "cpuacct.usage") if acct else None
        peak = _read(mem / "memory.max_usage_in_bytes") if mem else None
        return CgroupUsage(cpu_ns=int(cpu) if cpu and cpu.strip().isdigit() else None,
                           memory_peak_bytes=int(peak) if peak and peak.strip().isdigit() else None,
                           oom_kills=_field(_read(mem / "memory.oom_control"), "oom_kill") or 0 if mem else 0)

    def remove(self) -> bool:
        """Kill what is left and remove the cgroup from every hierarchy (also what podman made)."""
        self.kill(timeout=5.0)
        return all([remove_tree(str(d)) for d in self.dirs.values()])
