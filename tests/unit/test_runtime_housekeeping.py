"""Node housekeeping: capped job logs (marker, newest kept, offsets stay logical), old job dirs removed
on a schedule, readiness paths validated. Real processes through the real shim (no sandbox needed).
"""

from __future__ import annotations

import os

import pytest

from agent.enforce.mps import MpsController
from agent.runtime import logs
from agent.runtime.logs import CappedLog, read_chunk
from agent.runtime.manager import Runtime
from agent.state import StateDir
from controlplane.core.wire import StartOrder, StatusKind
from tests.support.waiting import wait_until


class Reports(list):
    def __call__(self, kind, job, **fields):
        self.append({"kind": kind, "attempt": job.attempt_id, **fields})


def make(tmp_path, **kw):
    reports = Reports()
    rt = Runtime(StateDir(tmp_path / "state"), node_name="n1", address="127.0.0.1", report=reports,
                 mps=MpsController("off", tmp_path), log_flush_s=0.2, **kw)
    return rt, reports


def order(attempt, argv, **kw):
    return StartOrder(job_id="job-" + attempt, attempt_id=attempt, epoch=1, name=attempt, argv=argv,
                      grace_s=1.0, **kw)


def ship_all(rt, attempt):
    """Read the streams as the log sender does, chunk by chunk; returns what the server got."""
    job, got = rt.job(attempt), {}
    for stream in ("stdout", "stderr"):
        chunks, offset = [], job.record["offsets"][stream]
        while True:
            data, end = read_chunk(job.job_dir / f"{stream}.log", offset, 4096)
            if end == offset:
                break
            chunks.append((end - len(data.encode()), data))
            offset = end
        rt.advance_offset(attempt, stream, offset)
        got[stream] = chunks
    return got


def test_capped_log_keeps_the_newest_with_a_marker(tmp_path):
    path = tmp_path / "stdout.log"
    log = CappedLog(path, cap=8192)
    lines = [f"line {i:05d}\n".encode() for i in range(3000)]  # 33 000 bytes
    for line in lines:
        log.write(line)
    assert path.stat().st_size <= 8192
    text = path.read_text()
    assert text.startswith("\n[gpupool: output truncated on the node:") and text.endswith("line 02999\n")
    total = sum(len(x) for x in lines)
    assert logs.size(path) == total  # the logical end: every byte the job wrote
    data, end = read_chunk(path, 0)  # a reader that shipped nothing yet starts at the marker
    assert data.startswith("\n[gpupool: output truncated") and end == total
    data, end = read_chunk(path, total - 11)
    assert (data, end) == ("line 02999\n", total)


def test_job_flooding_its_log_is_capped_and_shipping_stays_idempotent(tmp_path):
    rt, reports = make(tmp_path, log_max_bytes=16384)
    flood = "import sys\nfor i in range(20000): print(f'row {i:06d}')\nprint('last', file=sys.stderr)"
    rt.start(order("f1", ["python", "-c", flood]))
    got = {}
    for _ in range(3):  # ship while it runs, then after
        wait_until(lambda: logs.size(rt.job("f1").job_dir / "stdout.log") > 0, 10, "output")
        for stream, chunks in ship_all(rt, "f1").items():
            got.setdefault(stream, []).extend(chunks)
        rt.tick()
    wait_until(lambda: (rt.tick(), rt.job("f1").state != "running")[1], 20, "flood over")
    for stream, chunks in ship_all(rt, "f1").items():
        got.setdefault(stream, []).extend(chunks)
    job = rt.job("f1")
    assert (job.job_dir / "stdout.log").stat().st_size <= 16384
    offsets = [o for o, _ in got["stdout"]]
    assert offsets == sorted(set(offsets))  # strictly increasing: no chunk twice, replays stay exact
    shipped = "".join(d for _, d in got["stdout"])
    assert shipped.rstrip().endswith("row 019999") and "output truncated on the node" in shipped
    assert job.record["offsets"]["stdout"] == len("".join(f"row {i:06d}\n" for i in range(20000)))
    assert "last" in "".join(d for _, d in got["stderr"])


@pytest.mark.parametrize("path", ["@evil.example/x", "//evil.example/x", "health", "/a b", "/x\\y"])
def test_readiness_path_must_be_a_plain_path(tmp_path, path):
    rt, reports = make(tmp_path)
    rt.start(order("r1", ["python", "-c", "pass"], port_count=1, readiness_path=path))
    (r,) = reports
    assert r["kind"] == StatusKind.FAILED_TO_START and "readiness_path must be an absolute URL path" in r["reason"]


def test_finished_job_dirs_are_removed_on_schedule(tmp_path):
    now = [1000.0]
    rt, reports = make(tmp_path, keep_done_s=60, clock=lambda: now[0])
    rt.start(order("h1", ["python", "-c", "print('bye')"]))
    rt.start(order("h2", ["python", "-c", "import time; time.sleep(30)"]))
    wait_until(lambda: (rt.tick(), rt.job("h1").state == "exited")[1], 20, "h1 exited")
    ship_all(rt, "h1")
    wait_until(lambda: (rt.tick(), rt.job("h1").state == "done")[1], 20, "h1 done")
    state_dir, work_dir = rt.job("h1").job_dir, rt.sandbox.dirs.path("h1")
    assert state_dir.exists() and work_dir.exists()
    assert rt.housekeeping() == []  # within retention
    now[0] += 61
    assert rt.housekeeping() == ["h1"]
    assert not state_dir.exists() and not work_dir.exists()
    assert rt.job("h2").state == "running" and rt.job("h2").job_dir.exists()  # running jobs stay
    stray = rt.sandbox.dirs.root / "crashed-before-record"
    stray.mkdir()
    os.utime(stray, (now[0] - 120, now[0] - 120))
    assert rt.housekeeping() == ["crashed-before-record"] and not stray.exists()
    rt.stop("h2", "cleanup", 0)
