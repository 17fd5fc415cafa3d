"""Job logs: stored as chunks per (attempt, rank, stream) at the agent's byte offsets, capped per
stream (the head and the newest output are kept, the middle dropped, a marker says how much),
text cleaned so both databases store it; read as a tail (newest chunks only) or followed."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete, func, select
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session

from controlplane.core import wire
from controlplane.core.states import FINAL_STATES
from controlplane.db.database import Database
from controlplane.db.models import AttemptRow, LogChunkRow
from controlplane.services.access import visible_job
from controlplane.services.principal import Principal

Position = tuple[int, int]  # (attempt id, last chunk id read)
TAIL_BATCH = 64  # chunks read per step while looking for the last N lines


@dataclass(frozen=True, slots=True)
class LogCap:
    """How much of each member stream is kept: the first ``head_bytes`` and the newest rest."""

    max_bytes: int = 16 * 1024 * 1024
    head_bytes: int = 1024 * 1024

    @property
    def tail_bytes(self) -> int:
        return self.max_bytes - self.head_bytes

    def dropped(self, offset: int, end: int) -> bool:
        """True when a chunk at ``offset`` falls in the middle that a stream reaching ``end`` drops."""
        return self.head_bytes <= offset < end - self.tail_bytes


def clean_text(data: str) -> str:
    """Text every database stores: NUL becomes U+FFFD and lone surrogates are replaced."""
    if "\x00" in data:
        data = data.replace("\x00", "\ufffd")
    return data.encode("utf-8", "replace").decode("utf-8")


def clean_json(value: object) -> object:
    """``value`` with every string (keys too) cleaned like ``clean_text``."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        return {clean_text(str(k)): clean_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [clean_json(v) for v in value]
    return value


def store_chunks(s: Session, chunks: list[wire.LogChunk], cap: LogCap) -> tuple[int, list[wire.LogChunk]]:
    """Store new chunks (replays are no-ops) within the cap; returns (stored, the stored chunks)."""
    by_stream: dict[tuple[int, int, str], list[wire.LogChunk]] = {}
    for c in chunks:
        by_stream.setdefault((int(c.attempt_id), c.rank, c.stream[:16]), []).append(c)
    stored: list[wire.LogChunk] = []
    for (attempt, rank, stream), items in by_stream.items():
        key = (LogChunkRow.attempt_id == attempt, LogChunkRow.rank == rank, LogChunkRow.stream == stream)
        known = s.scalar(select(func.max(LogChunkRow.offset)).where(*key)) or 0
        end = max([known] + [c.offset + len(c.data) for c in items])
        for c in sorted(items, key=lambda x: x.offset):
            if cap.dropped(c.offset, end):
                continue
            if s.scalar(select(LogChunkRow.id).where(*key, LogChunkRow.offset == c.offset)):
                continue
            try:
                with s.begin_nested():
                    s.add(LogChunkRow(job_id=int(c.job_id), attempt_id=attempt, rank=rank, stream=stream,
                                      offset=c.offset, data=clean_text(c.data)))
            except (IntegrityError, DBAPIError):  # a replay racing this one, or text it cannot take
                continue
            stored.append(c)
        if end > cap.max_bytes:  # drop the middle the newest output pushed out
            s.execute(delete(LogChunkRow).where(*key, LogChunkRow.offset >= cap.head_bytes,
                                                LogChunkRow.offset < end - cap.tail_bytes))
    return len(stored), stored


def _latest_attempt(s: Session, job_id: int) -> int | None:
    return s.scalar(select(AttemptRow.id).where(AttemptRow.job_id == job_id)
                    .order_by(AttemptRow.number.desc()).limit(1))


def _render(rows: list[tuple[int, str, int, str]]) -> str:
    """Chunks (id, stream, offset, data) in order, with a marker where a stream has a gap."""
    out: list[str] = []
    ends: dict[str, int] = {}
    for _, stream, offset, data in rows:
        end = ends.get(stream)
        if end is not None and offset > end:
            out.append(f"\n[gpupool: {offset - end} bytes of {stream} not kept (log cap)]\n")
        out.append(data)
        ends[stream] = offset + len(data.encode())
    return "".join(out)


def read(db: Database, who: Principal, job_id: str, *, rank: int = 0,
         tail: int | None = None) -> tuple[str, Position, bool]:
    """The latest attempt's log for ``rank`` (its last ``tail`` lines: only the newest chunks are
    read), a follow position, and whether the job is final."""
    with db.read() as s:
        job = visible_job(s, who, job_id)
        final = job.status in FINAL_STATES
        attempt = _latest_attempt(s, job.id)
        if attempt is None:
            return "", (0, 0), final
        cols = (LogChunkRow.id, LogChunkRow.stream, LogChunkRow.offset, LogChunkRow.data)
        q = select(*cols).where(LogChunkRow.attempt_id == attempt, LogChunkRow.rank == rank)
        last = s.scalar(select(func.max(LogChunkRow.id)).where(LogChunkRow.attempt_id == attempt,
                                                                LogChunkRow.rank == rank)) or 0
        if tail is None:
            rows = [tuple(r) for r in s.execute(q.order_by(LogChunkRow.id))]
        else:
            rows, lines, before = [], 0, None
            while lines <= tail:
                page = q.order_by(LogChunkRow.id.desc()).limit(TAIL_BATCH)
                batch = [tuple(r) for r in s.execute(page.where(LogChunkRow.id < before) if before else page)]
                if not batch:
                    break
                rows.extend(batch)
                lines += sum(r[3].count("\n") for r in batch)
                before = batch[-1][0]
            rows.reverse()
    text = _render(rows)
    if tail is not None:
        kept = text.splitlines(keepends=True)
        text = "".join(kept[-tail:]) if tail else ""
    return text, (attempt, last), final


def read_after(db: Database, who: Principal, job_id: str, *, rank: int,
               position: Position) -> tuple[str, Position, bool]:
    """What was stored after ``position`` (a newer attempt starts from its beginning)."""
    with db.read() as s:
        job = visible_job(s, who, job_id)
        final = job.status in FINAL_STATES
        attempt, last = position
        latest = _latest_attempt(s, job.id)
        if latest is not None and latest != attempt:
            attempt, last = latest, 0
        if not attempt:
            return "", position, final
        rows = [tuple(r) for r in s.execute(
            select(LogChunkRow.id, LogChunkRow.stream, LogChunkRow.offset, LogChunkRow.data).where(
                LogChunkRow.attempt_id == attempt, LogChunkRow.rank == rank, LogChunkRow.id > last)
            .order_by(LogChunkRow.id).limit(1000))]
    return "".join(r[3] for r in rows), (attempt, max((r[0] for r in rows), default=last)), final
