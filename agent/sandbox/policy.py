"""What the sandbox does on this node, and the prepared sandbox of each job member.

``Sandbox`` is built once from the agent's settings. Mode ``auto`` turns it on when the agent
runs as root on a node with usable cgroups, ``on`` refuses to start otherwise, ``off`` runs jobs
as the agent's user (a laptop). ``member(order, ...)`` gives a ``Member``: identity, job
directory, cgroup with the order's limits, device grant, and the enforcement lines the start
report carries (which layer enforces what, or why it is not enforced).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from agent.runtime.container import (DEFAULT_ULIMITS, ContainerRun, ContainerRuntime, cdi_gpu_devices,
                                     container_name, find_runtime, nvidia_hook_present, run_argv)
from agent.sandbox.cgroups import CgroupSupport, JobCgroup, Limits, detect_cgroups
from agent.sandbox.devices import DeviceGrant, grant_for
from agent.sandbox.identity import Identity, IdentityPool
from agent.sandbox.jobdirs import JobDirs, check_private, interpreter_closed
from controlplane.core.wire import StartOrder

log = logging.getLogger("gpupool.agent.sandbox")
MODES = ("auto", "on", "off")
_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


def host_share(order: StartOrder) -> tuple[int | None, int | None]:
    """(cpu_milli, memory_mib) the member was granted on the host; None where not limited."""
    return order.cpu_milli or None, order.memory_mib or None


@dataclass(slots=True)
class Member:
    """One member's prepared sandbox (identity None and cgroup None when the sandbox is off)."""

    identity: Identity | None
    job_dir: Path
    cgroup: JobCgroup | None
    limits: Limits
    grant: DeviceGrant | None
    enforcement: dict[str, str] = field(default_factory=dict)
    container: tuple[ContainerRuntime, str] | None = None

    @property
    def uid(self) -> int | None:
        return self.identity.uid if self.identity else None

    @property
    def gid(self) -> int | None:
        return self.identity.gid if self.identity else None


class SandboxUnavailable(ValueError):
    """Mode "on" but this node cannot sandbox jobs; the message says why."""


class Sandbox:
    def __init__(self, *, mode: str = "auto", state_root: Path, jobs_root: Path,
                 uid_range: str = "300000-399999", identity_scope: str = "team",
                 cgroup_parent: str = "gpupool", pids_max: int | None = 4096, device_root: str = "/dev",
                 container_runtime: str = "auto", ulimits: tuple[str, ...] = DEFAULT_ULIMITS,
                 support: CgroupSupport | None = None) -> None:
        if mode not in MODES:
            raise ValueError(f"sandbox must be one of {', '.join(MODES)}, not {mode!r}")
        self.support = support or detect_cgroups()
        # a leading "python" runs the agent's own interpreter: job uids must be able to run it
        self.python_problem = interpreter_closed(sys.executable, (sys.prefix, sys.base_prefix))
        self.reason = ""
        if mode == "off":
            self.reason = "off (sandbox=off)"
        elif os.geteuid() != 0:
            self.reason = f"off: the agent runs as uid {os.geteuid()}, not root"
        elif not self.support.usable:
            self.reason = f"off: {self.support.detail}"
        elif mode == "auto" and self.python_problem:
            self.reason = f"off: {self.python_problem}"
        self.enabled = not self.reason
        if mode == "on" and not self.enabled:
            raise SandboxUnavailable(f"sandbox=on but jobs cannot be sandboxed here: {self.reason}")
        if self.enabled and self.python_problem:
            log.warning("%s: jobs whose command starts with python will fail to start", self.python_problem)
        self.cgroup_parent = cgroup_parent
        self.pids_max = pids_max
        self.device_root = device_root
        self._runtime_pref, self._ulimits = container_runtime, tuple(ulimits)
        self._runtime: tuple[ContainerRuntime | None, str] | None = None
        # several agents may share a machine (gpupool up, tests): their cgroups, job and container
        # names carry a key of their own state dir; uids come from one table per jobs root
        self.key = hashlib.sha256(str(Path(state_root).expanduser().resolve()).encode()).hexdigest()[:8]
        self.identities = None
        if self.enabled:
            check_private(Path(state_root))
            JobDirs(jobs_root, owned=True)  # the shared root: 0711, reachable by job uids
            self.identities = IdentityPool(Path(jobs_root) / "identities.json", uid_range, identity_scope)
        self.dirs = JobDirs(Path(jobs_root) / self.key, owned=self.enabled)
        if self.enabled:
            log.info("sandbox on: %s, uids %s per %s, jobs in %s", self.support.detail, uid_range,
                     identity_scope, jobs_root)
        else:
            (log.info if mode == "off" else log.warning)(
                "sandbox %s: jobs run as the agent's user without cgroup limits", self.reason)

    @property
    def mps_dir(self) -> Path | None:
        """Where per-(uid, accelerator) MPS daemons keep their pipes (job uids can reach it)."""
        return self.dirs.root / ".gpupool-mps" if self.enabled else None

    def container_runtime(self) -> tuple[ContainerRuntime | None, str]:
        if self._runtime is None:
            self._runtime = find_runtime(self._runtime_pref, self._ulimits)
        return self._runtime

    def cgroup_for(self, attempt_id: str) -> JobCgroup | None:
        if not self.enabled:
            return None
        return JobCgroup(self.support, self.cgroup_parent, f"{self.key}-{_SAFE.sub('_', attempt_id)[:100]}")

    def shim_join_files(self) -> list[str]:
        """cgroup.procs files a job's shim moves itself into: a cgroup of the agent's own, outside
        the agent's (a container restart kills its whole cgroup) and outside the member's (the job
        cannot kill its shim), so the shim and the job outlive an agent restart."""
        if not self.enabled:
            return []
        shims = JobCgroup(self.support, self.cgroup_parent, f"{self.key}-shims")
        if not shims.join_files():
            return []  # systemd places processes itself (the unit keeps the shims: KillMode=process)
        shims.create(Limits())
        return shims.join_files()

    def member(self, order: StartOrder, minors: dict[str, int]) -> Member:
        """Identity, directory, cgroup (created, limits applied) and device grant for ``order``."""
        ident = self.identities.for_order(order) if self.identities else None
        job_dir = self.dirs.create(order.attempt_id, ident)
        cpu, mem = host_share(order)
        if not self.enabled:
            return Member(None, job_dir, None, Limits(cpu, mem, self.pids_max), None,
                          {"identity": f"agent's own uid {os.geteuid()} ({self.reason})",
                           "cgroup": self.reason})
        grant = grant_for([s.accelerator_uuid for s in order.slices], minors, self.device_root)
        limits = Limits(cpu, mem, self.pids_max, grant.rules(container=bool(order.image)))
        cgroup = self.cgroup_for(order.attempt_id)
        enforcement = {"identity": f"uid {ident.uid} gid {ident.gid} ({ident.key}), no supplementary "
                                   "groups; job directory 0700 owned by it"}
        enforcement.update(cgroup.create(limits))
        if "devices" in enforcement and enforcement["devices"].startswith(("cgroup", "systemd")):
            enforcement["devices"] += f" ({grant.describe()})"
        enforcement["cgroup"] = f"{self.support.detail}: {cgroup.rel}"
        return Member(ident, job_dir, cgroup, limits, grant, enforcement)

    def container_argv(self, order: StartOrder, member: Member, argv: list[str], env_names: list[str],
                       cwd: str, mounts: list[str], mps_pipe: str | None,
                       env_values: dict[str, str] | None = None) -> list[str]:
        """``podman run ...`` for a member whose spec names an image (raises ValueError if none)."""
        rt, why = self.container_runtime()
        if rt is None:
            raise ValueError(why)
        uuids = [s.accelerator_uuid for s in order.slices]
        cg = member.cgroup
        nested = cg is not None and cg.version == "v1"
        run = ContainerRun(image=order.image or "", name=container_name(f"{self.key}-{order.attempt_id}"),
                           argv=argv,
                           env_names=env_names, cwd=cwd, mounts=mounts, uid=member.uid, gid=member.gid,
                           device_paths=[n.path for n in member.grant.gpus] if member.grant else [],
                           gpu_uuids=uuids, cgroup_parent="/" + cg.rel if nested else None,
                           limits=member.limits, mps_pipe=mps_pipe, env_values=env_values or {})
        argv_out, enforcement = run_argv(rt, run, cdi=cdi_gpu_devices(uuids) if uuids else None,
                                         hook=nvidia_hook_present())
        if not nested:
            member.enforcement.update({k: v for k, v in enforcement.items() if k != "container"})
        member.enforcement["container"] = f"{order.image}: " + enforcement["container"]
        member.container = (rt, run.name)
        return argv_out
