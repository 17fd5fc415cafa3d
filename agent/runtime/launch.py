"""From a start order to what the shim runs: sandbox, environment, argv (process or container).

Checks what can be checked before anything starts (command, workdir, accelerators, readiness
path) and raises ``StartError`` with a message naming the problem; the runtime reports it as
``failed_to_start``. Secrets stay out of argv: the environment goes to the shim's environ and a
container gets ``--env NAME`` only.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from agent.enforce.env import MpsSettings, inherited_env, is_fractional, slice_env
from agent.enforce.mps import MpsController
from agent.sandbox.policy import Member, Sandbox
from controlplane.core.wire import StartOrder

JOB_UMASK = 0o077  # a job's files are private to its uid


class StartError(Exception):
    """The order cannot be started; the message says why (reported as failed_to_start)."""


def resolve_argv(argv: list[str]) -> list[str]:
    """A leading "python" (or python3) means the agent's own interpreter."""
    if argv and argv[0] in ("python", "python3"):
        return [sys.executable, *argv[1:]]
    return list(argv)


def check_readiness_path(path: str | None) -> None:
    """The probe goes to http://127.0.0.1:<port><path>: ``path`` must be a plain absolute path."""
    if path is None:
        return
    parts = urlsplit("http://127.0.0.1:1" + path)
    if (not path.startswith("/") or path.startswith("//") or parts.netloc != "127.0.0.1:1"
            or any(c.isspace() or ord(c) < 32 or c == "\\" for c in path) or len(path) > 2048):
        raise StartError(f"readiness_path must be an absolute URL path like /health, not {path!r}")


@dataclass(slots=True)
class Prepared:
    plan: dict
    env: dict[str, str]
    member: Member
    enforcement: dict[str, str] = field(default_factory=dict)


def _mps_for(order: StartOrder, mps: MpsController, member: Member) -> MpsSettings:
    if not is_fractional(order):
        return MpsSettings(mode=mps.mode, detail=mps.reason_off)
    uuid = order.slices[0].accelerator_uuid if len(order.slices) == 1 else None
    return mps.settings(member.uid, member.gid, uuid)


def _check_command(argv: list[str], env: dict[str, str], cwd: str, node: str) -> None:
    exe = argv[0]
    if os.sep in exe:
        full = exe if os.path.isabs(exe) else os.path.join(cwd, exe)
        if not (os.path.isfile(full) and os.access(full, os.X_OK)):
            raise StartError(f"command not found or not executable: {exe!r}")
    elif shutil.which(exe, path=env.get("PATH")) is None:
        raise StartError(f"command not found on node {node}: {exe!r}")


def prepare(order: StartOrder, *, sandbox: Sandbox, mps: MpsController, node: str, ports: list[int],
            master_port: int, watchdog_grace_s: float | None, log_max_bytes: int,
            models: dict[str, str], minors: dict[str, int], simulated: bool) -> Prepared:
    """Everything the shim needs to start ``order``; creates the member's directory and cgroup."""
    argv = resolve_argv(order.argv)
    if not argv:
        raise StartError("empty command")
    if sandbox.enabled and sandbox.python_problem and argv[0] == sys.executable and not order.image:
        raise StartError(f"cannot run python jobs on node {node}: {sandbox.python_problem}")
    check_readiness_path(order.readiness_path)
    if order.workdir and not os.path.isdir(order.workdir):
        raise StartError(f"workdir {order.workdir!r} does not exist on node {node}")
    try:
        member = sandbox.member(order, minors)
    except (OSError, RuntimeError, ValueError) as exc:
        raise StartError(f"cannot prepare the job's sandbox on node {node}: {exc}") from exc
    job_dir = member.job_dir
    settings = _mps_for(order, mps, member)
    se = slice_env(order, node=node, ports=ports, master_port=master_port,
                   output_dir=str(job_dir / "output"), mps=settings, watchdog_grace_s=watchdog_grace_s,
                   models=models)
    own = dict(se.env)
    if sandbox.enabled:
        own.update(HOME=str(job_dir), TMPDIR=str(job_dir / "tmp"))
    if order.spec is not None:  # packaged workloads read their spec from a file, never argv
        own["GPUPOOL_SPEC_FILE"] = str(sandbox.dirs.write_spec(job_dir, order.spec, member.identity))
    if simulated:
        own["GPUPOOL_SIM_MEMORY_FILE"] = str(job_dir / "sim_memory_mib")
    job_env = {**order.env, **own}
    env = {**inherited_env(dict(os.environ), same_user=not sandbox.enabled), **job_env}
    cwd = order.workdir or str(job_dir)
    cgroup = member.cgroup
    cg_plan = cgroup.shim_plan() if cgroup is not None else None
    uid, gid = member.uid, member.gid
    if order.image:
        mounts = [str(job_dir)] + ([cwd] if cwd != str(job_dir) else [])
        # podman itself keeps the agent's HOME; the container gets the job's as plain settings
        paths = {k: job_env.pop(k) for k in ("HOME", "TMPDIR") if k in job_env}
        env = {**inherited_env(dict(os.environ)), **job_env}
        try:
            argv = sandbox.container_argv(order, member, argv, sorted(job_env), cwd, mounts,
                                          settings.pipe_dir if settings.available else None, paths)
        except ValueError as exc:
            raise StartError(f"cannot run image {order.image!r} on node {node}: {exc}") from exc
        if cg_plan is not None:
            cg_plan["join"] = []  # the container is nested under the cgroup; podman itself is not
        uid = gid = None  # podman runs as root and starts the container as the job's uid
        cwd = "/"
    else:
        _check_command(argv, env, cwd, node)
        if cgroup is not None and cgroup.scope_unit:
            argv = cgroup.scope_argv(member.limits, member.grant.paths if member.grant else [], uid, gid) + argv
            uid = gid = None  # systemd-run switches to the job's uid inside the scope
    plan = {"argv": argv, "cwd": cwd, "uid": uid, "gid": gid,
            "umask": JOB_UMASK if sandbox.enabled else None, "cgroup": cg_plan,
            "shim_join": sandbox.shim_join_files(), "log_max_bytes": log_max_bytes}
    return Prepared(plan, env, member, {**se.enforcement, **member.enforcement})
