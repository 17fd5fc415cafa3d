"""The agent's state on disk: node identity (token), status seq counter and one record per job.

Everything a restarted agent needs to keep going lives here: it reuses its node token and
re-adopts running jobs from their records (pid + start time) instead of killing them.
Layout: node.json, seq, outbox/*.jsonl (agent/buffer.py), jobs/<attempt>/{record.json, stdout.log,
stderr.log, child.json, exit.json, output/}.
"""

from __future__ import annotations

import json
import os
import re
import threading
from pathlib import Path
from typing import Any

_SAFE = re.compile(r"[^A-Za-z0-9._-]")


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON so a crash leaves either the old or the new file, never half of one."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as fh:
        json.dump(data, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def read_json(path: Path) -> Any | None:
    """Parsed JSON, or None when the file is missing or unreadable."""
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None


class StateDir:
    """Files under the agent's state directory (created with mode 0700: it holds the node token)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).expanduser()
        try:
            self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
            (self.root / "jobs").mkdir(exist_ok=True)
            (self.root / "outbox").mkdir(exist_ok=True)
        except OSError as exc:
            raise ValueError(f"state dir {self.root} is not writable: {exc.strerror or exc}") from exc
        self._seq_lock = threading.Lock()
        self._seq = int((self.root / "seq").read_text().strip() or 0) if (self.root / "seq").exists() else 0

    # identity -----------------------------------------------------------------------------
    def load_identity(self) -> dict[str, Any] | None:
        return read_json(self.root / "node.json")

    def save_identity(self, identity: dict[str, Any]) -> None:
        path = self.root / "node.json"
        write_json_atomic(path, identity)
        os.chmod(path, 0o600)

    def clear_identity(self) -> None:
        (self.root / "node.json").unlink(missing_ok=True)

    # status sequence ----------------------------------------------------------------------
    def next_seq(self) -> int:
        """A strictly increasing per-agent sequence number that survives restarts."""
        with self._seq_lock:
            self._seq += 1
            tmp = self.root / "seq.tmp"
            tmp.write_text(str(self._seq))
            os.replace(tmp, self.root / "seq")
            return self._seq

    # job records --------------------------------------------------------------------------
    def job_dir(self, attempt_id: str) -> Path:
        name = _SAFE.sub("_", attempt_id)[:120] or "attempt"
        path = self.root / "jobs" / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def save_record(self, attempt_id: str, record: dict[str, Any]) -> None:
        write_json_atomic(self.job_dir(attempt_id) / "record.json", record)

    def load_records(self) -> list[dict[str, Any]]:
        out = []
        for path in sorted((self.root / "jobs").glob("*/record.json")):
            rec = read_json(path)
            if isinstance(rec, dict) and "order" in rec:
                out.append(rec)
        return out
