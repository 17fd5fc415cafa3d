"""Maps every process on an accelerator to the job that launched it; the rest is unmanaged.

Jobs run in their own session (the shim is its leader). A GPU process belongs to a job when it
descends from the job's session leader, or when it still carries that session id after its parent
died (a daemonised worker re-parented to init). ``job_ancestry`` hands the telemetry sampler a
pid -> parent map in which such orphans hang under their session leader again; the sampler then
walks it to attribute per-process memory, and puts everything else in unmanaged_memory_mib.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from agent.procfs import ProcStat, all_stats


def session_aware_parents(root_pids: Iterable[int], stats: dict[int, ProcStat] | None = None) -> dict[int, int]:
    """pid -> parent pid, except that members of a job session point at its leader."""
    roots = set(root_pids)
    stats = all_stats() if stats is None else stats
    out: dict[int, int] = {}
    for st in stats.values():
        if st.session in roots and st.pid != st.session and not _descends(st.pid, st.session, stats):
            out[st.pid] = st.session
        else:
            out[st.pid] = st.ppid
    return out


def _descends(pid: int, root: int, stats: dict[int, ProcStat]) -> bool:
    seen = 0
    while pid in stats and seen < 64:
        pid = stats[pid].ppid
        if pid == root:
            return True
        seen += 1
    return False


def job_ancestry(roots: Callable[[], Iterable[int]]) -> Callable[[], dict[int, int]]:
    """An ``ancestry`` callable for TelemetrySampler bound to the runtime's current job roots."""
    return lambda: session_aware_parents(roots())
