"""The agent's exporter serves DCGM-named GPU series and gpupool slice series over real HTTP."""

from __future__ import annotations

import os

import httpx
import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from agent.devices.nvml import NvmlBackend
from tests.support.nvml_replay import FIXTURES, replay_module
from agent.devices.simulated import SimulatedBackend
from agent.exporter import AgentExporter
from agent.telemetry import ManagedJob, TelemetrySampler
from controlplane.core.wire import SliceSpec


def _scrape(port: int) -> dict[str, dict[tuple, float]]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    out: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def _by(series: dict[tuple, float], **labels: str) -> float:
    (value,) = [v for k, v in series.items() if all((n, labels[n]) in k for n in labels)]
    return value


@pytest.fixture
def served():
    exporters = []

    def serve(sampler: TelemetrySampler, **kw) -> int:
        exporter = AgentExporter(lambda: sampler.latest, hostname="node-a", host="127.0.0.1", port=0, **kw)
        exporters.append(exporter)
        return exporter.start()

    yield serve
    for e in exporters:
        e.stop()


def test_gpu_and_slice_series_hold_backend_values(served):
    backend = SimulatedBackend(2, "H100-80GB", seed=1)
    gpu0, gpu1 = backend.discover()
    me = os.getpid()
    backend.attach(me, gpu0.uuid, 250, 20000, used_mib=26000)  # over its slice: pct must cap at 100
    jobs = [
        ManagedJob("job-1", "att-1", frozenset({me}),
                   (SliceSpec(accelerator_uuid=gpu0.uuid, compute_milli=250, memory_mib=20000,
                              device_memory_mib=81559),), "research", "nlp", "alice"),
        ManagedJob("job-2", "att-2", frozenset({2**22 + 1}),
                   (SliceSpec(accelerator_uuid=gpu1.uuid, compute_milli=500, memory_mib=40000,
                              device_memory_mib=81559),), "prod", "serving"),
    ]
    sampler = TelemetrySampler(backend, lambda: jobs)
    snap = sampler.sample()
    m = _scrape(served(sampler))
    s0, s1 = snap.samples
    for name, attr in [("DCGM_FI_DEV_GPU_UTIL", "gpu_util_pct"), ("DCGM_FI_DEV_FB_USED", "memory_used_mib"),
                       ("DCGM_FI_DEV_POWER_USAGE", "power_w"), ("DCGM_FI_DEV_GPU_TEMP", "temperature_c"),
                       ("DCGM_FI_DEV_SM_CLOCK", "sm_clock_mhz")]:
        assert _by(m[name], UUID=gpu0.uuid) == getattr(s0, attr), name
        assert _by(m[name], UUID=gpu1.uuid) == getattr(s1, attr), name
    labels = dict(next(iter(k for k in m["DCGM_FI_DEV_GPU_UTIL"] if ("gpu", "1") in k)))
    assert labels == {"gpu": "1", "UUID": gpu1.uuid, "device": "nvidia1",
                      "modelName": "NVIDIA H100 80GB HBM3", "Hostname": "node-a"}
    assert _by(m["DCGM_FI_DEV_FB_FREE"], UUID=gpu1.uuid) == 81559 - s1.memory_used_mib
    assert _by(m["DCGM_FI_DEV_XID_ERRORS"], UUID=gpu0.uuid) == 0
    # Per-slice series: busy slice capped at 100 %, idle slice reads 0 everywhere.
    assert _by(m["gpupool_slice_memory_allocated_mib"], job="job-1") == 20000
    assert _by(m["gpupool_slice_memory_used_mib"], job="job-1", queue="research", team="nlp",
               user="alice") == 26000
    assert _by(m["gpupool_slice_memory_used_pct"], job="job-1") == 100.0
    assert _by(m["gpupool_slice_sm_util_pct"], job="job-1") == 25.0
    assert _by(m["gpupool_slice_sm_util_of_allocation_pct"], job="job-1") == 100.0
    for name in ("gpupool_slice_memory_used_mib", "gpupool_slice_memory_used_pct",
                 "gpupool_slice_sm_util_pct", "gpupool_slice_sm_util_of_allocation_pct"):
        assert _by(m[name], job="job-2") == 0.0, name
    for name in m:
        if name.endswith("_pct"):
            assert all(0 <= v <= 100 for v in m[name].values()), name
    # A private registry: nothing landed in prometheus_client's global one.
    assert "DCGM_FI_DEV_GPU_UTIL" not in {f.name for f in REGISTRY.collect()}


@pytest.mark.skipif(not FIXTURES.exists(), reason="recordings not found")
def test_replayed_h100_values_and_xid(served):
    nvml = replay_module()
    backend = NvmlBackend(nvml)
    while nvml.advance():
        pass
    nvml.inject_xid(0, 48)
    sampler = TelemetrySampler(backend)
    sampler.sample()
    m = _scrape(served(sampler))
    uuid = "GPU-a0c8cd8f-d437-f731-22f6-e222de17099d"
    assert _by(m["DCGM_FI_DEV_POWER_USAGE"], UUID=uuid) == pytest.approx(693.754)
    assert _by(m["DCGM_FI_DEV_FB_USED"], UUID=uuid) == 18306
    assert _by(m["DCGM_FI_DEV_GPU_UTIL"], UUID=uuid, modelName="NVIDIA H100 80GB HBM3") == 100
    assert _by(m["DCGM_FI_DEV_XID_ERRORS"], UUID=uuid) == 48
    assert _by(m["gpupool_gpu_healthy"], UUID=uuid) == 0
    assert _by(m["DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"], UUID=uuid) == 2269901
    assert _by(m["gpupool_gpu_unmanaged_memory_mib"], UUID=uuid) == 6858 + 10954


def test_healthz_ok_then_stale_and_404(served):
    backend = SimulatedBackend(1, "T4")
    sampler = TelemetrySampler(backend)
    port = served(sampler, stale_after_s=60)
    r = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
    assert r.status_code == 503 and r.json()["status"] == "stale"  # nothing sampled yet
    assert httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text == ""
    sampler.sample()
    r = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
    assert r.status_code == 200 and r.json()["status"] == "ok" and r.json()["hostname"] == "node-a"
    sampler.latest.ts -= 120
    assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 503
    r = httpx.get(f"http://127.0.0.1:{port}/nope", timeout=5)
    assert r.status_code == 404 and "/metrics" in r.text


def test_port_in_use_is_a_clear_error(served):
    sampler = TelemetrySampler(SimulatedBackend(1, "T4"))
    port = served(sampler)
    with pytest.raises(RuntimeError, match=f"cannot serve metrics on 127.0.0.1:{port}.*--metrics-port"):
        AgentExporter(lambda: None, host="127.0.0.1", port=port).start()


def test_health_callback_can_mark_unhealthy(served):
    sampler = TelemetrySampler(SimulatedBackend(1, "T4"))
    sampler.sample()
    answers = iter([{"ok": False, "connected": False}])

    def health() -> dict:
        return next(answers)  # second call raises StopIteration: must read as unhealthy too

    port = served(sampler, health=health)
    r = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
    assert r.status_code == 503 and r.json()["status"] == "unhealthy" and r.json()["connected"] is False
    r = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
    assert r.status_code == 503 and "StopIteration" in r.json()["error"]
