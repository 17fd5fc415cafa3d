"""Linux /proc readers: a process's start time, parent, session and liveness (no psutil needed)."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ProcStat:
    pid: int
    state: str
    ppid: int
    pgid: int
    session: int
    start_ticks: int  # clock ticks since boot: with the pid, identifies a process across restarts


def read_stat(pid: int) -> ProcStat | None:
    """Parsed /proc/<pid>/stat, or None when the process does not exist."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read().decode("utf-8", "replace")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # the command name may hold spaces and parentheses: split after the last ')'
    rest = raw[raw.rfind(")") + 2:].split()
    try:
        return ProcStat(pid=pid, state=rest[0], ppid=int(rest[1]), pgid=int(rest[2]),
                        session=int(rest[3]), start_ticks=int(rest[19]))
    except (IndexError, ValueError):
        return None


def is_alive(pid: int, start_ticks: int | None = None) -> bool:
    """True when ``pid`` runs (not a zombie) and, if given, started at ``start_ticks``."""
    st = read_stat(pid)
    if st is None or st.state in ("Z", "X"):
        return False
    return start_ticks is None or st.start_ticks == start_ticks


def all_stats() -> dict[int, ProcStat]:
    """Every visible process."""
    out: dict[int, ProcStat] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = read_stat(int(name))
            if st is not None:
                out[st.pid] = st
    return out


def descendants(roots: dict[int, str], stats: dict[int, ProcStat] | None = None) -> dict[int, str]:
    """pid -> owner for every process in the trees (or sessions) started at ``roots``.

    ``roots`` maps a job's session-leader pid to its owner (an attempt id). A process belongs to
    an owner when it descends from the root or still carries the root's session id.
    """
    stats = all_stats() if stats is None else stats
    children: dict[int, list[int]] = {}
    for st in stats.values():
        children.setdefault(st.ppid, []).append(st.pid)
    owner: dict[int, str] = {}
    for st in stats.values():
        if st.session in roots:
            owner[st.pid] = roots[st.session]
    for root, who in roots.items():
        stack = [root]
        while stack:
            pid = stack.pop()
            if pid in stats:
                owner.setdefault(pid, who)
            stack.extend(children.get(pid, ()))
    return owner
