"""Job working directories outside the agent's state, each owned by its job's uid (mode 0700).

Layout: ``<jobs root>/<attempt>/`` (the job's cwd and $HOME) with ``spec.json`` (0400, the job's
uid only), ``output/`` and ``tmp/`` ($TMPDIR). The root is 0711 (others may enter their own
directory but not list the root). ``check_private`` guards the state dir (node token, job
records): root-owned, 0700.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
from pathlib import Path

from agent.sandbox.identity import Identity

_SAFE = re.compile(r"[^A-Za-z0-9._-]")


def check_private(path: Path) -> None:
    """Raise ValueError unless ``path`` is owned by this user and closed to everyone else."""
    st = path.stat()
    problems = []
    if st.st_uid != os.geteuid():
        problems.append(f"owned by uid {st.st_uid}, not {os.geteuid()}")
    if st.st_mode & 0o077:
        problems.append(f"mode {stat.S_IMODE(st.st_mode):04o} (group/others have access)")
    if problems:
        raise ValueError(f"state dir {path} must be private to the agent: {', '.join(problems)}; "
                         f"fix with: chown {os.geteuid()} {path} && chmod 700 {path}")


def closed_to_others(path: Path) -> Path | None:
    """The first of ``path`` and its ancestors other users cannot enter (no o+x), or None."""
    for parent in [path, *path.parents]:
        if parent.exists() and not parent.stat().st_mode & stat.S_IXOTH:
            return parent
    return None


def check_reachable(path: Path) -> None:
    """Raise ValueError when an ancestor of ``path`` cannot be entered by other users (o+x)."""
    closed = closed_to_others(path)
    if closed is not None:
        raise ValueError(f"jobs dir {path}: job users cannot enter {closed} (mode "
                         f"{stat.S_IMODE(closed.stat().st_mode):04o}); use a jobs dir they can "
                         "reach (jobs_dir) or chmod o+x the directories above it")


def interpreter_closed(executable: str, prefixes: tuple[str, ...]) -> str | None:
    """Why job uids cannot run the agent's python (what a leading "python" means), or None."""
    for path in (Path(os.path.realpath(executable)), *(Path(p) for p in prefixes)):
        closed = closed_to_others(path)
        if closed is not None:
            return (f"the agent's python ({path}) is not reachable by job uids: {closed} is mode "
                    f"{stat.S_IMODE(closed.stat().st_mode):04o}; install gpupool where other users "
                    "can run it (e.g. /opt/gpupool)")
    return None


class JobDirs:
    def __init__(self, root: Path, *, owned: bool) -> None:
        """``owned``: chown each job's directory to its uid (the agent runs as root)."""
        self.root = Path(root).expanduser()
        self.owned = owned
        self.root.mkdir(parents=True, exist_ok=True)
        if owned:
            os.chmod(self.root, 0o711)
            check_reachable(self.root)

    def path(self, attempt_id: str) -> Path:
        return self.root / (_SAFE.sub("_", attempt_id)[:120] or "attempt")

    def create(self, attempt_id: str, ident: Identity | None) -> Path:
        path = self.path(attempt_id)
        for sub in (path, path / "output", path / "tmp"):
            sub.mkdir(mode=0o700, exist_ok=True)
            if self.owned and ident is not None:
                os.chown(sub, ident.uid, ident.gid)
                os.chmod(sub, 0o700)
        return path

    def write_spec(self, job_dir: Path, spec: dict, ident: Identity | None) -> Path:
        """The spec as a file only the job's uid can read (specs never travel in argv)."""
        path = job_dir / "spec.json"
        path.unlink(missing_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(spec, fh)
        if self.owned and ident is not None:
            os.chown(path, ident.uid, ident.gid)
        os.chmod(path, 0o400)
        return path

    def remove(self, attempt_id: str) -> None:
        shutil.rmtree(self.path(attempt_id), ignore_errors=True)

    def attempts(self) -> list[str]:
        return [p.name for p in self.root.iterdir() if p.is_dir()] if self.root.exists() else []
