"""An unprivileged uid/gid per team (default) or per job, from a configured range, never root's.

The table (``identities.json`` in the jobs root, root-only, shared under a file lock by every
agent of the machine) keeps a team's uid across agent restarts, and jobs of two teams never
share one. UIDs that name an account in /etc/passwd or /etc/group are skipped, as are 0 and the
agent's own ids.
"""

from __future__ import annotations

import fcntl
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

from agent.state import read_json, write_json_atomic
from controlplane.core.wire import StartOrder

SCOPES = ("team", "job")


@dataclass(frozen=True, slots=True)
class Identity:
    uid: int
    gid: int
    key: str  # "team:<name>" or "job:<id>"


def parse_range(text: str) -> tuple[int, int]:
    """ "300000-399999" -> (300000, 399999); raises ValueError naming what is wrong."""
    m = re.fullmatch(r"\s*(\d+)\s*-\s*(\d+)\s*", text or "")
    if not m:
        raise ValueError(f"uid range must look like 300000-399999, not {text!r}")
    first, last = int(m.group(1)), int(m.group(2))
    if first < 1000 or last < first or last >= 2**31 - 1:
        raise ValueError(f"uid range {text!r} must lie within 1000..2147483646 and be ascending")
    return first, last


def _system_ids() -> set[int]:
    taken: set[int] = set()
    for path in ("/etc/passwd", "/etc/group"):
        try:
            for line in Path(path).read_text().splitlines():
                fields = line.split(":")
                if len(fields) > 2 and fields[2].isdigit():
                    taken.add(int(fields[2]))
        except OSError:
            continue
    return taken


def identity_key(order: StartOrder, scope: str) -> str:
    """Whose uid a member runs as: its team's, or with scope "job" (or no identity) its job's."""
    team = order.identity.team if order.identity else ""
    if scope == "team" and team:
        return f"team:{team}"
    return f"job:{order.job_id}"


class IdentityPool:
    """Hands out uids from ``[first, last]``; gid = uid (one private group each)."""

    def __init__(self, table: Path, uid_range: str, scope: str = "team") -> None:
        if scope not in SCOPES:
            raise ValueError(f"identity scope must be one of {', '.join(SCOPES)}, not {scope!r}")
        self.first, self.last = parse_range(uid_range)
        self.scope = scope
        self.table = table
        self._lock = threading.Lock()
        self._ids: dict[str, int] = {}
        self._reserved = _system_ids() | {0, os.getuid(), os.geteuid(), os.getgid(), os.getegid()}

    def _locked(self):
        """Exclusive lock on the table (other agents of this machine share it); reloads it."""
        fh = open(self.table.with_name(self.table.name + ".lock"), "a")
        fcntl.flock(fh, fcntl.LOCK_EX)
        data = read_json(self.table)
        self._ids = {k: int(v) for k, v in data.items()} if isinstance(data, dict) else {}
        return fh

    def for_order(self, order: StartOrder) -> Identity:
        key = identity_key(order, self.scope)
        with self._lock, self._locked():
            uid = self._ids.get(key)
            if uid is None:
                uid = self._next_free()
                self._ids[key] = uid
                write_json_atomic(self.table, self._ids)
                os.chmod(self.table, 0o600)
        return Identity(uid, uid, key)

    def _next_free(self) -> int:
        used = set(self._ids.values()) | self._reserved
        for uid in range(self.first, self.last + 1):
            if uid not in used:
                return uid
        raise RuntimeError(f"uid range {self.first}-{self.last} is exhausted "
                           f"({len(self._ids)} identities); widen uid_range")

    def release(self, keys: set[str]) -> None:
        """Forget per-job identities whose jobs are gone from this node (team ones stay)."""
        with self._lock, self._locked():
            gone = [k for k in self._ids if k.startswith("job:") and k in keys]
            for key in gone:
                del self._ids[key]
            if gone:
                write_json_atomic(self.table, self._ids)
