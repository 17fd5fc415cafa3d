"""Signal or kill every process of a cgroup tree with no fork race (stdlib only: the shim uses it).

A job's processes are whatever its cgroup holds, including children a container runtime made
below it and processes that called ``setsid`` or double-forked. Killing walks the tree's
``cgroup.procs``; with a freezer (v1) the tree is frozen first so nothing can fork between the
read and the kill, and ``cgroup.kill`` (v2) does it in one write.
"""

from __future__ import annotations

import os
import signal
import time


def tree_pids(root: str) -> set[int]:
    """Every pid in the cgroup ``root`` and its children."""
    pids: set[int] = set()
    for path, _dirs, _files in os.walk(root):
        try:
            with open(os.path.join(path, "cgroup.procs")) as fh:
                pids.update(int(line) for line in fh if line.strip())
        except (FileNotFoundError, ProcessLookupError, ValueError):
            continue
    return pids


def signal_tree(root: str, sig: int) -> int:
    """Send ``sig`` to every process of the tree; returns how many were signalled."""
    sent = 0
    for pid in tree_pids(root):
        try:
            os.kill(pid, sig)
            sent += 1
        except (ProcessLookupError, PermissionError):
            pass
    return sent


def _write(path: str, value: str) -> bool:
    try:
        with open(path, "w") as fh:
            fh.write(value)
        return True
    except OSError:
        return False


def _wait_frozen(freezer_dir: str, deadline: float) -> None:
    state_file = os.path.join(freezer_dir, "freezer.state")
    while time.monotonic() < deadline:
        try:
            with open(state_file) as fh:
                if fh.read().strip() == "FROZEN":
                    return
        except OSError:
            return
        time.sleep(0.005)


def kill_tree(root: str, *, freezer_dir: str | None = None, kill_file: str | None = None,
              timeout: float = 10.0) -> bool:
    """SIGKILL everything in the tree until it is empty; True when empty within ``timeout``."""
    deadline = time.monotonic() + timeout
    if kill_file and os.path.exists(kill_file):
        _write(kill_file, "1")
    while True:
        pids = tree_pids(root)
        if not pids:
            return True
        if time.monotonic() >= deadline:
            return False
        frozen = bool(freezer_dir) and _write(os.path.join(freezer_dir, "freezer.state"), "FROZEN")
        if frozen:
            _wait_frozen(freezer_dir, min(deadline, time.monotonic() + 1.0))
            pids = tree_pids(root)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if frozen:
            _write(os.path.join(freezer_dir, "freezer.state"), "THAWED")  # killed tasks die on thaw
        time.sleep(0.01)


def remove_tree(root: str) -> bool:
    """rmdir the cgroup and its (empty) children bottom-up; True when it is gone."""
    if not os.path.isdir(root):
        return True
    for path, _dirs, _files in os.walk(root, topdown=False):
        try:
            os.rmdir(path)
        except FileNotFoundError:
            pass
        except OSError:
            return False
    return not os.path.exists(root)
