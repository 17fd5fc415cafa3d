"""Container runtime: a member whose spec names an image runs in it through podman (docker if no podman).

The container is started by the job's shim like any command (``podman run`` in the foreground),
so logs, progress, the exit code and re-adoption work as for processes. It gets: the job's uid,
host network (rendezvous, NCCL), the job's directory mounted at the same path, only the slice's
GPUs (CDI ``nvidia.com/gpu=<uuid>`` when the node has a CDI spec for them, else the device nodes
plus NVIDIA's OCI hook through ``NVIDIA_VISIBLE_DEVICES``), ``--init`` so a stop reaches the
command, and the job's limits: on cgroup v1 it is nested under the member's cgroup
(``--cgroup-parent``), elsewhere the runtime's own ``--memory``/``--cpus``/``--pids-limit`` apply.
Secrets never enter argv: variables are passed as ``-e NAME`` and read from podman's environment.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field

from agent.sandbox.cgroups import Limits

CDI_DIRS = ("/etc/cdi", "/var/run/cdi")
HOOK_DIRS = ("/usr/share/containers/oci/hooks.d", "/etc/containers/oci/hooks.d")
DEFAULT_ULIMITS = ("nofile=1024:1024", "nproc=1024:1024")
_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


@dataclass(frozen=True, slots=True)
class ContainerRuntime:
    name: str  # "podman" | "docker"
    binary: str
    ulimits: tuple[str, ...] = DEFAULT_ULIMITS

    def base(self) -> list[str]:
        # runc: crun fails on hybrid cgroup v1 nodes; podman only (docker has its own daemon config)
        return [self.binary, "--runtime", "runc"] if self.name == "podman" else [self.binary]


def find_runtime(preference: str = "auto", ulimits: tuple[str, ...] = DEFAULT_ULIMITS
                 ) -> tuple[ContainerRuntime | None, str]:
    """The runtime to use and, when there is none, why (``preference``: auto|podman|docker)."""
    if preference not in ("auto", "podman", "docker"):
        return None, f"container runtime must be auto, podman or docker, not {preference!r}"
    for name in (("podman", "docker") if preference == "auto" else (preference,)):
        binary = shutil.which(name)
        if binary is None:
            continue
        if name == "docker":
            try:
                ok = subprocess.run([binary, "info"], capture_output=True, timeout=10).returncode == 0
            except (OSError, subprocess.TimeoutExpired):
                ok = False
            if not ok:
                continue
        return ContainerRuntime(name, binary, tuple(ulimits)), ""
    wanted = "podman or docker" if preference == "auto" else preference
    return None, f"no container runtime on this node ({wanted} not found or not answering)"


def cdi_gpu_devices(uuids: list[str], dirs: tuple[str, ...] = CDI_DIRS) -> list[str] | None:
    """``nvidia.com/gpu=<uuid>`` names when a CDI spec on the node declares them all, else None."""
    text = ""
    for d in dirs:
        for path in sorted(glob.glob(os.path.join(d, "*.yaml")) + glob.glob(os.path.join(d, "*.json"))):
            try:
                with open(path, encoding="utf-8") as fh:
                    text += fh.read()
            except OSError:
                continue
    if "nvidia.com/gpu" not in text or not all(u in text for u in uuids):
        return None
    return [f"nvidia.com/gpu={u}" for u in uuids]


def nvidia_hook_present(dirs: tuple[str, ...] = HOOK_DIRS) -> bool:
    return any(glob.glob(os.path.join(d, "*nvidia*")) for d in dirs) or \
        shutil.which("nvidia-container-runtime-hook") is not None


def container_name(attempt_id: str) -> str:
    return "gpupool-" + _SAFE.sub("_", attempt_id)[:100]


@dataclass(slots=True)
class ContainerRun:
    """Everything ``podman run`` needs for one member."""

    image: str
    name: str
    argv: list[str]
    env_names: list[str]  # values come from podman's own environment (secrets stay out of argv)
    cwd: str
    mounts: list[str]  # host paths, mounted at the same path
    uid: int | None = None
    gid: int | None = None
    device_paths: list[str] = field(default_factory=list)  # host device nodes of the slice
    gpu_uuids: list[str] = field(default_factory=list)
    cgroup_parent: str | None = None  # nest under the member's cgroup (v1)
    limits: Limits = field(default_factory=Limits)  # applied by the runtime when not nested
    mps_pipe: str | None = None
    env_values: dict[str, str] = field(default_factory=dict)  # plain settings (paths), no secrets


def run_argv(rt: ContainerRuntime, run: ContainerRun, *, cdi: list[str] | None = None,
             hook: bool = False) -> tuple[list[str], dict[str, str]]:
    """The argv of ``podman run`` and how each limit is enforced in it."""
    argv = [*rt.base(), "run", "--rm", "--init", "--name", run.name, "--network", "host",
            "--workdir", run.cwd]
    enforcement: dict[str, str] = {}
    for ulimit in rt.ulimits:
        argv += ["--ulimit", ulimit]
    if run.uid is not None:
        argv += ["--user", f"{run.uid}:{run.gid}"]
    for path in dict.fromkeys(run.mounts):
        argv += ["--volume", f"{path}:{path}"]
    for name in run.env_names:
        argv += ["--env", name]  # the value comes from podman's own environment, not argv
    for name, value in run.env_values.items():
        argv += ["--env", f"{name}={value}"]
    if run.cgroup_parent:
        if rt.name == "podman":
            argv += ["--cgroup-manager", "cgroupfs", "--cgroups", "no-conmon"]
        argv += ["--cgroup-parent", run.cgroup_parent]
        enforcement["container"] = f"{rt.name}: nested under the member's cgroup {run.cgroup_parent}"
    else:
        lim = run.limits
        if lim.memory_mib is not None:
            argv += ["--memory", f"{lim.memory_mib}m", "--memory-swap", f"{lim.memory_mib}m"]
            enforcement["memory"] = f"{rt.name} --memory {lim.memory_mib}m"
        if lim.cpu_milli is not None:
            argv += ["--cpus", f"{lim.cpu_milli / 1000:g}"]
            enforcement["cpu"] = f"{rt.name} --cpus {lim.cpu_milli / 1000:g}"
        if lim.pids_max is not None:
            argv += ["--pids-limit", str(lim.pids_max)]
            enforcement["pids"] = f"{rt.name} --pids-limit {lim.pids_max}"
        enforcement["container"] = f"{rt.name}: its own cgroup"
    if cdi is not None:
        for dev in cdi:
            argv += ["--device", dev]
        enforcement["devices"] = f"{rt.name} CDI {', '.join(cdi)}"
    else:
        for path in run.device_paths:
            argv += ["--device", f"{path}:/dev/{os.path.basename(path)}"]
        shown = ", ".join(run.device_paths) or "no device nodes"
        enforcement["devices"] = f"{rt.name} --device {shown}" + (" + NVIDIA hook" if hook else "")
        if hook and run.gpu_uuids:
            argv += ["--env", "NVIDIA_VISIBLE_DEVICES"]
    if run.mps_pipe:
        argv += ["--ipc", "host", "--volume", f"{run.mps_pipe}:{run.mps_pipe}"]
    argv += [run.image, *run.argv]
    return argv, enforcement


def remove_container(rt: ContainerRuntime, name: str) -> None:
    """Best effort: remove a container left behind (agent crash between start and cleanup)."""
    try:
        subprocess.run([*rt.base(), "rm", "-f", name], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        pass


def kill_container(rt: ContainerRuntime, name: str, sig: str) -> None:
    """Signal the container's init (used when the member has no cgroup of ours)."""
    try:
        subprocess.Popen([*rt.base(), "kill", "--signal", sig, name], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
    except OSError:
        pass
