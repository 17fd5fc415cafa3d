"""The simulated backend: deterministic identity, and figures driven by the jobs attached to it."""

from __future__ import annotations

import re
import subprocess
import sys
import time

import pytest

from agent.devices import BackendUnavailable, DeviceBackend, open_backend, parse_simulate_spec
from agent.devices.profiles import PROFILES
from agent.devices.simulated import MEMORY_FILE_ENV, SimulatedBackend

UUID = re.compile(r"^GPU-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def sleeper():
    """A real process to attach (the backend drops pids that have exited, as NVML does)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc
    proc.kill()
    proc.wait()


def test_spec_parsing():
    assert parse_simulate_spec("2x4xH100-80GB") == (2, 4, "H100-80GB")
    assert parse_simulate_spec("4xA100-40GB") == (1, 4, "A100-40GB")
    assert parse_simulate_spec("T4") == (1, 1, "T4")
    assert parse_simulate_spec("") == (1, 1, "H100-80GB")
    backend = open_backend("simulate:2x4xH100-80GB")
    assert isinstance(backend, DeviceBackend)
    assert len(backend.discover()) == 4


@pytest.mark.parametrize("spec, words", [
    ("simulate:0x2xT4", "counts must be >= 1"),
    ("simulate:2x2x2xT4", "expected NODESxGPUSxMODEL"),
    ("simulate:FOO", "unknown accelerator model 'FOO'"),
    ("simulate:100xT4", "gpu count must be 1..64"),
    ("cuda", "unknown device backend 'cuda'"),
    ("ascend", "--simulate 1x8xAscend-910B"),
])
def test_bad_specs_say_what_is_wrong(spec, words):
    with pytest.raises(BackendUnavailable, match=re.escape(words)):
        open_backend(spec)


def test_identity_is_deterministic_and_per_node():
    a = open_backend("simulate:4xH100-80GB", seed=7, node="n1").discover()
    b = open_backend("simulate:4xH100-80GB", seed=7, node="n1").discover()
    c = open_backend("simulate:4xH100-80GB", seed=7, node="n2").discover()
    assert a == b
    assert not {x.uuid for x in a} & {x.uuid for x in c}
    assert all(UUID.match(x.uuid) for x in a)
    first = a[0]
    assert (first.name, first.memory_mib, first.compute_capability) == ("NVIDIA H100 80GB HBM3", 81559, "9.0")
    assert [x.index for x in a] == [0, 1, 2, 3]


@pytest.mark.parametrize("model", sorted(PROFILES))
def test_every_profile_opens(model):
    backend = open_backend(f"simulate:2x{model}")
    info = backend.discover()[0]
    profile = PROFILES[model]
    assert (info.model, info.memory_mib, info.vendor) == (model, profile.memory_mib, profile.vendor)
    idle = backend.sample()[0]
    assert idle.gpu_util_pct == 0 and idle.power_w == pytest.approx(profile.idle_w, rel=0.02)
    assert idle.memory_used_mib == profile.idle_used_mib


def test_samples_are_deterministic_given_seed_and_clock(sleeper):
    def run() -> list:
        clock = Clock()
        backend = SimulatedBackend(2, "A100-80GB", seed=3, clock=clock)
        uuid = backend.discover()[0].uuid
        backend.attach(sleeper.pid, uuid, 500, 40000)
        out = []
        for _ in range(5):
            clock.t += 1.0
            out.append([s.model_dump() for s in backend.sample()])
        return out

    assert run() == run()


def test_load_follows_attached_jobs(sleeper):
    clock = Clock()
    backend = SimulatedBackend(2, "H100-80GB", clock=clock)
    gpu0, gpu1 = (a.uuid for a in backend.discover())
    backend.sample()
    backend.attach(sleeper.pid, gpu0, compute_milli=250, memory_mib=20000)
    clock.t += 10
    busy, idle = backend.sample()
    assert 23 <= busy.gpu_util_pct <= 27 and idle.gpu_util_pct == 0
    assert busy.memory_used_mib == 480 + 0.6 * 20000
    assert busy.power_w > idle.power_w + 100
    assert busy.sm_clock_mhz == 1980 and idle.sm_clock_mhz == 345
    energy_before = busy.energy_j
    clock.t += 10
    busy2, _ = backend.sample()
    assert busy2.energy_j == pytest.approx(energy_before + 10 * busy2.power_w, abs=0.1)
    (proc,) = backend.processes()
    assert (proc.pid, proc.accelerator_uuid, proc.memory_used_mib, proc.sm_util_pct) == (
        sleeper.pid, gpu0, 12000.0, 25.0)
    backend.set_usage(sleeper.pid, busy=0.0)
    assert backend.sample()[0].gpu_util_pct == 0
    backend.detach(sleeper.pid)
    assert backend.processes() == [] and backend.sample()[0].memory_used_mib == 480


def test_job_declares_memory_through_its_file(tmp_path):
    """A job writes its used MiB to $GPUPOOL_SIM_MEMORY_FILE; the backend reports it (watchdog input)."""
    backend = SimulatedBackend(1, "H100-80GB")
    uuid = backend.discover()[0].uuid
    path = tmp_path / "mem"
    script = ("import os, time, pathlib\n"
              f"p = pathlib.Path(os.environ['{MEMORY_FILE_ENV}'])\n"
              "p.write_text('5000'); time.sleep(0.5); p.write_text('25000'); time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", script], env={MEMORY_FILE_ENV: str(path)})
    try:
        backend.attach(proc.pid, uuid, 250, 20000, memory_file=str(path))
        deadline = time.monotonic() + 10
        seen = set()
        while time.monotonic() < deadline and 25000.0 not in seen:
            seen.add(backend.processes()[0].memory_used_mib)
            time.sleep(0.05)
        assert 25000.0 in seen  # over its 20000 MiB slice: what the watchdog must catch
        assert backend.sample()[0].memory_used_mib == 480 + 25000
    finally:
        proc.kill()
        proc.wait()
    # An exited job disappears from the process list on its own.
    assert backend.processes() == []


def test_bad_attach_is_refused():
    backend = SimulatedBackend(1, "T4")
    with pytest.raises(ValueError, match="no simulated accelerator 'GPU-nope'"):
        backend.attach(1, "GPU-nope", 100, 100)
    with pytest.raises(ValueError, match=re.escape("compute_milli must be 0..1000, got 1001")):
        backend.attach(1, backend.discover()[0].uuid, 1001, 100)


def test_faults(sleeper):
    backend = SimulatedBackend(2, "L40S")
    gpu0, gpu1 = (a.uuid for a in backend.discover())
    backend.inject_xid(gpu0, 31)
    backend.inject_xid(gpu1, 79)
    s0, s1 = backend.sample()
    assert (s0.xid_errors, s0.last_xid, s0.healthy) == (1, 31, True)
    assert (s1.xid_errors, s1.last_xid, s1.healthy) == (1, 79, False)
    backend.set_healthy(gpu0, False)
    assert backend.health() == {gpu0: False, gpu1: False}
