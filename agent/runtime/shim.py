"""Tiny parent of every job process: records the child's pid and exit code in files.

Run as ``python -I shim.py <job_dir> <argv...>`` in the job's own session. Because the shim
outlives an agent restart, a re-adopted job's exit code is still known. It ignores the group's
SIGTERM (the job gets it too) and waits; stdlib only, so it starts fast.
"""

import json
import os
import signal
import sys
import time


def _write(path: str, data: dict) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(data, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def main(argv: list[str]) -> int:
    job_dir, cmd = argv[0], argv[1:]
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: None)  # a handler, not SIG_IGN: exec resets it for the child
    try:
        # posix_spawn resets these to default atomically: no window where the job would inherit
        # the shim's handler and swallow an early SIGTERM
        pid = os.posix_spawnp(cmd[0], cmd, os.environ,
                              setsigdef=(signal.SIGTERM, signal.SIGINT, signal.SIGHUP))
    except OSError as exc:
        print(f"gpupool: cannot start {cmd[0]!r}: {exc.strerror or exc}", file=sys.stderr, flush=True)
        _write(os.path.join(job_dir, "exit.json"), {"exit_code": 127, "ts": time.time(),
                                                    "error": f"cannot start {cmd[0]!r}: {exc}"})
        return 127
    _write(os.path.join(job_dir, "child.json"), {"pid": pid})
    _, status = os.waitpid(pid, 0)  # retried on EINTR by Python (PEP 475)
    rc = os.waitstatus_to_exitcode(status)
    code = 128 - rc if rc < 0 else rc  # killed by signal N -> 128+N, as shells report it
    _write(os.path.join(job_dir, "exit.json"), {"exit_code": code, "ts": time.time()})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
