"""Parent of every job member: starts it in its sandbox, captures its output, records its exit.

Run as ``python -E -s shim.py <job state dir>``; reads ``launch.json`` there (argv, cwd, uid,
gid, umask, cgroup, the shims' own cgroup, log cap) and passes its own environment to the member. The member joins
its cgroup, becomes a session leader, drops to its uid/gid with no supplementary groups, enters
its working directory and execs. The shim stays outside the member's cgroup and keeps the
agent's uid, so the job can neither signal it nor kill it; it pumps stdout/stderr into capped
log files, and when the member's main process exits it kills whatever the member left behind
(the whole cgroup, else the member's session), then writes ``exit.json``. Because the shim
outlives an agent restart, a re-adopted job's exit code and logs are still captured.
"""

import json
import os
import selectors
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from agent.runtime.logs import CappedLog  # noqa: E402  (stdlib-only modules of the agent)
from agent.sandbox.kill import kill_tree  # noqa: E402

DRAIN_S = 2.0  # after the member ended, how long output still held open may take to arrive


def _write_json(path: str, data: dict) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(data, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _child(plan: dict, out_w: int, err_w: int, report_w: int) -> None:
    """In the forked child: enter the sandbox and exec; on failure say why on ``report_w``."""
    step = "cannot start"
    try:
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(out_w, 1)
        os.dup2(err_w, 2)
        step = "cannot join the job's cgroup"
        for path in (plan.get("cgroup") or {}).get("join", []):
            with open(path, "w") as fh:
                fh.write(str(os.getpid()))
        os.setsid()
        if plan.get("uid") is not None:
            step = f"cannot switch to uid {plan['uid']}"
            os.setgroups([])
            os.setresgid(plan["gid"], plan["gid"], plan["gid"])
            os.setresuid(plan["uid"], plan["uid"], plan["uid"])
        if plan.get("umask") is not None:
            os.umask(plan["umask"])
        step = f"cannot enter workdir {plan['cwd']!r}" + (f" as uid {plan['uid']}" if plan.get("uid") else "")
        os.chdir(plan["cwd"])
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGPIPE, signal.SIGXFSZ,
                    signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        os.closerange(3, report_w)
        os.closerange(report_w + 1, 65536)
        step = f"cannot start {plan['argv'][0]!r}"
        os.execvpe(plan["argv"][0], plan["argv"], os.environ)
    except OSError as exc:
        os.write(report_w, f"{step}: {exc.strerror or exc}".encode())
    except BaseException as exc:  # noqa: BLE001 - never return into the shim's code
        os.write(report_w, f"{step}: {exc}".encode())
    os._exit(127)


def _session_members(session: int) -> list[int]:
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()
            if int(fields[3]) == session:
                out.append(int(name))
        except (OSError, IndexError, ValueError):
            continue
    return out


def kill_leftovers(plan: dict, child: int) -> None:
    """Kill every process the member leaves behind (background jobs, setsid, double forks)."""
    cg = plan.get("cgroup")
    if cg:
        kill_tree(cg["procs_root"], freezer_dir=cg.get("freezer"), kill_file=cg.get("kill_file"))
        return
    for pid in [child, *_session_members(child)]:  # no cgroup: its session is the best we know
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def main(argv: list[str]) -> int:
    job_dir = argv[0]
    with open(os.path.join(job_dir, "launch.json")) as fh:
        plan = json.load(fh)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)  # a stop is for the member; the shim must record it
    for path in plan.get("shim_join") or []:  # out of the agent's cgroup: outlive its restart
        with open(path, "w") as fh:
            fh.write(str(os.getpid()))
    cap = int(plan.get("log_max_bytes") or 0)
    logs = {"stdout": CappedLog(os.path.join(job_dir, "stdout.log"), cap),
            "stderr": CappedLog(os.path.join(job_dir, "stderr.log"), cap)}
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    report_r, report_w = os.pipe2(os.O_CLOEXEC)
    wake_r, wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
    child = os.fork()
    if child == 0:
        _child(plan, out_w, err_w, report_w)
    for fd in (out_w, err_w, report_w):
        os.close(fd)
    failure = os.read(report_r, 4096).decode("utf-8", "replace")  # empty once exec succeeded
    os.close(report_r)
    if failure:
        os.waitpid(child, 0)
        logs["stderr"].write(f"gpupool: {failure}\n".encode())
        _write_json(os.path.join(job_dir, "exit.json"), {"exit_code": 127, "ts": time.time(),
                                                         "error": failure})
        return 127
    _write_json(os.path.join(job_dir, "child.json"), {"pid": child})
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    sel = selectors.DefaultSelector()
    sel.register(out_r, selectors.EVENT_READ, logs["stdout"])
    sel.register(err_r, selectors.EVENT_READ, logs["stderr"])
    sel.register(wake_r, selectors.EVENT_READ, None)
    status, drain_until = None, 0.0
    while True:
        timeout = 1.0 if status is None else max(0.0, drain_until - time.monotonic())
        for key, _ in sel.select(timeout):
            if key.data is None:
                os.read(wake_r, 512)
                continue
            data = os.read(key.fd, 65536)
            if data:
                key.data.write(data)
            else:
                sel.unregister(key.fd)
                os.close(key.fd)
        if status is None:
            pid, st = os.waitpid(child, os.WNOHANG)
            if pid:
                status = st
                kill_leftovers(plan, child)
                drain_until = time.monotonic() + DRAIN_S
        if status is not None and (len(sel.get_map()) <= 1 or time.monotonic() >= drain_until):
            break
    rc = os.waitstatus_to_exitcode(status)
    code = 128 - rc if rc < 0 else rc  # killed by signal N -> 128+N, as shells report it
    _write_json(os.path.join(job_dir, "exit.json"), {"exit_code": code, "ts": time.time()})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
