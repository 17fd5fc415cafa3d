"""Telemetry attributes per-process GPU use to jobs (children included) and flags unmanaged memory."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from agent.devices.nvml import NvmlBackend
from tests.support.nvml_replay import FIXTURES, replay_module
from agent.devices.simulated import SimulatedBackend
from agent.telemetry import ManagedJob, TelemetrySampler, parent_pids
from controlplane.core.wire import SliceSpec


def _slice(uuid: str, milli: int, mib: int) -> SliceSpec:
    return SliceSpec(accelerator_uuid=uuid, compute_milli=milli, memory_mib=mib, device_memory_mib=81559)


@pytest.fixture
def family():
    """A job's root process with one child; the child is the one using the GPU."""
    root = subprocess.Popen(
        [sys.executable, "-c",
         "import subprocess, sys, time\n"
         "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
         "print(c.pid, flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    child = int(root.stdout.readline())
    yield root.pid, child
    subprocess.run(["kill", str(child)], check=False)
    root.kill()
    root.wait()


def test_child_process_usage_counts_for_its_job(family):
    root, child = family
    assert parent_pids()[child] == root
    backend = SimulatedBackend(2, "H100-80GB")
    gpu0, gpu1 = (a.uuid for a in backend.discover())
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        backend.attach(child, gpu0, 500, 40000, used_mib=30000)
        backend.attach(stranger.pid, gpu0, 100, 8000, used_mib=3000)
        job = ManagedJob("job-1", "att-1", frozenset({root}), (_slice(gpu0, 500, 40000),), "research", "nlp")
        idle_job = ManagedJob("job-2", "att-2", frozenset({999999}), (_slice(gpu1, 250, 20000),), "q", "t")
        snap = TelemetrySampler(backend, lambda: [job, idle_job]).sample()
    finally:
        stranger.kill()
        stranger.wait()
    busy, idle = snap.slices
    assert (busy.job_id, busy.queue, busy.team, busy.memory_used_mib, busy.sm_util_pct) == (
        "job-1", "research", "nlp", 30000.0, 50.0)
    assert (idle.memory_used_mib, idle.sm_util_pct) == (0.0, None)
    assert snap.samples[0].unmanaged_memory_mib == 3000.0  # the stranger gpupool did not start
    assert snap.samples[1].unmanaged_memory_mib == 0.0
    usage = snap.slice_usage()
    assert usage[0].attempt_id == "att-1" and usage[0].memory_used_mib == 30000.0


def test_background_sampling_keeps_latest_fresh():
    backend = SimulatedBackend(8, "H100-80GB")
    sampler = TelemetrySampler(backend)
    sampler.start(interval_s=0.05)
    try:
        deadline = time.monotonic() + 5
        while sampler.latest is None and time.monotonic() < deadline:
            time.sleep(0.01)
        first = sampler.latest.ts
        time.sleep(0.2)
        assert sampler.latest.ts > first and len(sampler.latest.samples) == 8
    finally:
        sampler.stop()
    assert sampler.errors == 0


@pytest.mark.skipif(not FIXTURES.exists(), reason="recordings not found")
def test_recorded_tenants_attributed_to_jobs():
    """The real H100 series: pids 450 and 451 are two jobs' processes."""
    nvml = replay_module()
    backend = NvmlBackend(nvml)
    uuid = backend.discover()[0].uuid
    jobs = [ManagedJob("a", "a1", frozenset({450}), (_slice(uuid, 500, 8192),)),
            ManagedJob("b", "b1", frozenset({451}), (_slice(uuid, 500, 12288),))]
    sampler = TelemetrySampler(backend, lambda: jobs, ancestry=dict)
    while nvml.advance():
        snap = sampler.sample()
    a, b = snap.slices
    assert (a.memory_used_mib, b.memory_used_mib) == (6858.0, 10954.0)
    assert a.sm_util_pct + b.sm_util_pct == 100.0
    assert snap.samples[0].unmanaged_memory_mib == 0.0
