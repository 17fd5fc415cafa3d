"""Attribution on real processes: a job's children (even daemonised ones) count for the job;
everything else on the GPU is unmanaged memory."""

from __future__ import annotations

import subprocess
import sys
import time

from agent.attribution import job_ancestry
from agent.devices.simulated import SimulatedBackend
from agent.telemetry import ManagedJob, TelemetrySampler
from controlplane.core.wire import SliceSpec

# the job: a session leader whose child double-forks a worker (re-parented away from the job)
JOB = """
import os, sys, time
if os.fork() == 0:
    if os.fork() == 0:
        print(os.getpid(), flush=True)
        time.sleep(30)
    os._exit(0)
time.sleep(30)
"""


def test_daemonised_worker_counts_for_its_job_strangers_are_unmanaged():
    job = subprocess.Popen([sys.executable, "-c", JOB], stdout=subprocess.PIPE, text=True,
                           start_new_session=True)
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        worker = int(job.stdout.readline())
        time.sleep(0.1)  # its parent has exited: the worker is an orphan now
        backend = SimulatedBackend(gpus=1, model="H100-80GB")
        uuid = backend.discover()[0].uuid
        backend.attach(worker, uuid, 500, 40000, used_mib=12000)
        backend.attach(stranger.pid, uuid, 1000, None, used_mib=3000)
        jobs = [ManagedJob(job_id="j", attempt_id="a", pids=frozenset({job.pid}),
                           slices=(SliceSpec(accelerator_uuid=uuid, compute_milli=500, memory_mib=40000,
                                             device_memory_mib=81559),))]
        sampler = TelemetrySampler(backend, lambda: jobs, ancestry=job_ancestry(lambda: [job.pid]))
        snap = sampler.sample()
        (used,) = snap.slices
        assert used.memory_used_mib == 12000.0
        assert snap.samples[0].unmanaged_memory_mib == 3000.0
        # without the session rule the orphan would be unmanaged too
        plain = TelemetrySampler(backend, lambda: jobs).sample()
        assert plain.samples[0].unmanaged_memory_mib == 15000.0
    finally:
        import os
        import signal

        os.killpg(job.pid, signal.SIGKILL)
        stranger.kill()
        job.wait()
        stranger.wait()
