"""Telemetry on replayed H100 recordings: an escape to another GPU, and per-job memory under MPS.

The escape replays the two-tenant recording on a two-GPU copy of the card with one tenant's
process placed on the GPU outside its job's slice. Under MPS, NVML listed only the MPS server
(recorded), so a job's use comes from its own progress report.
"""

from __future__ import annotations

import json

import pytest

from agent.devices import open_backend
from tests.support.nvml_replay import FIXTURES, replay_module
from agent.enforce.watchdog import MemoryWatchdog
from agent.runtime.progress import ProgressReader, parse_gpu_memory
from agent.telemetry import ManagedJob, TelemetrySampler
from controlplane.core.wire import SliceSpec

pytestmark = pytest.mark.skipif(not FIXTURES.exists(), reason="no H100 recordings")


def _job(attempt: str, pids: set[int], uuid: str, memory_mib: int) -> ManagedJob:
    spec = SliceSpec(accelerator_uuid=uuid, compute_milli=500, memory_mib=memory_mib, device_memory_mib=81559)
    return ManagedJob(f"job-{attempt}", attempt, frozenset(pids), (spec,))


def test_replayed_escape_to_another_gpu_is_a_violation_and_unmanaged():
    nvml = replay_module(gpus=2, placement={451: 1})  # tenant 451 shows on the second GPU
    backend = open_backend("nvml", nvml=nvml)
    gpu0, gpu1 = [a.uuid for a in backend.discover()]
    jobs = [_job("a-450", {450}, gpu0, 20000), _job("a-451", {451}, gpu0, 20000)]  # both sliced on GPU 0
    sampler = TelemetrySampler(backend, lambda: jobs, ancestry=dict)
    while nvml.advance() and not nvml.current["procs"][1:]:
        pass  # to the first sample where both tenants hold memory
    snap = sampler.sample()
    (escape,) = snap.escapes
    assert (escape.attempt_id, escape.accelerator_uuid, escape.memory_mib) == ("a-451", gpu1, 10954.0)
    by_gpu = {s.uuid: s for s in snap.samples}
    assert by_gpu[gpu1].unmanaged_memory_mib == 10954.0  # the scheduler counts it taken
    assert by_gpu[gpu0].unmanaged_memory_mib == 0.0
    usage = {(r.attempt_id, r.accelerator_uuid): r.memory_used_mib for r in snap.slices}
    assert usage == {("a-450", gpu0): 6858.0, ("a-451", gpu0): 0.0}
    dog = MemoryWatchdog(grace_s=0.0)
    (v,) = dog.check({(escape.attempt_id, escape.accelerator_uuid): escape.memory_mib},
                     {(escape.attempt_id, escape.accelerator_uuid): 0.0})
    assert v.reason == (f"memory used outside the slice: 10954 MiB on accelerator {gpu1}, "
                        "which is not part of the job's slice")


def test_under_mps_the_job_report_is_its_figure(tmp_path):
    nvml = replay_module(mps=True)
    backend = open_backend("nvml", nvml=nvml)
    (gpu,) = [a.uuid for a in backend.discover()]
    # the recording's two MPS clients: 3 GiB (pid 456) and 5 GiB (pid 457), reported by themselves
    readers = {}
    for attempt, mib in (("c1", 3072 + 518), ("c2", 5120 + 518)):
        log = tmp_path / f"{attempt}.log"
        log.write_text("step 1\nGPUPOOL_PROGRESS " + json.dumps({"step": 1, "gpu_memory_mib": mib}) + "\n")
        readers[attempt] = ProgressReader(log, [gpu])
        readers[attempt].poll()
    jobs = [_job("c1", {456}, gpu, 20389), _job("c2", {457}, gpu, 4096)]
    reported = lambda: {(a, u): m for a, r in readers.items() for u, m in r.gpu_memory.items()}  # noqa: E731
    sampler = TelemetrySampler(backend, lambda: jobs, ancestry=dict, reported=reported)
    servers = []
    while nvml.advance():
        snap = sampler.sample()
        assert not any(p.pid in (456, 457) for p in snap.processes)  # NVML never lists MPS clients
        servers += [p for p in snap.processes if p.pid == 494]
        usage = {r.attempt_id: r.memory_used_mib for r in snap.slices}
        assert usage == {"c1": 3590.0, "c2": 5638.0}
    assert servers and snap.samples[0].unmanaged_memory_mib == 16.0  # the MPS server itself
    (v,) = MemoryWatchdog(grace_s=0.0).check({("c2", gpu): 5638.0}, {("c2", gpu): 4096.0})
    assert v.attempt_id == "c2"  # over its slice by its own account: stopped like any other


def test_progress_report_forms():
    uuids = ["GPU-a", "GPU-b"]
    assert parse_gpu_memory(100, uuids) == {"GPU-a": 100.0, "GPU-b": 100.0}
    assert parse_gpu_memory({"1": 7, "GPU-a": 3, "9": 1, "GPU-x": 2}, uuids) == {"GPU-b": 7.0, "GPU-a": 3.0}
    assert parse_gpu_memory(True, uuids) == {} and parse_gpu_memory(-1, uuids) == {}
    assert parse_gpu_memory({"0": "lots"}, uuids) == {}
