"""The NVML backend parses a replay of a real H100's NVML answers (values and errors alike)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pynvml
import pytest

from agent.devices import BackendUnavailable, open_backend
from agent.devices.nvml import NvmlBackend
from tests.support.nvml_replay import FIXTURES, replay_module

pytestmark = pytest.mark.skipif(not FIXTURES.exists(), reason=f"recordings not found at {FIXTURES}")


def _smi_root() -> ET.Element:
    return ET.parse(FIXTURES / "nvidia-smi-q.xml").getroot()


def _smi() -> ET.Element:
    return _smi_root().find("gpu")


def test_identity_matches_nvidia_smi():
    backend = open_backend("nvml", nvml=replay_module())
    (gpu,) = backend.discover()
    smi = _smi()
    assert gpu.uuid == smi.findtext("uuid") == "GPU-a0c8cd8f-d437-f731-22f6-e222de17099d"
    assert gpu.name == smi.findtext("product_name")
    assert gpu.model == "H100-80GB"
    assert gpu.serial == smi.findtext("serial")
    assert gpu.pci_bus_id == smi.findtext("pci/pci_bus_id")
    assert f"{gpu.memory_mib} MiB" == smi.findtext("fb_memory_usage/total")
    assert gpu.compute_capability == "9.0"
    assert smi.findtext("mig_mode/current_mig") == "Disabled" and gpu.labels["mig"] == "disabled"
    assert gpu.labels["driver_version"] == _smi_root().findtext("driver_version")
    # Not Supported on the H100: NUMA node id and every NVLink -> those fields only are empty.
    assert gpu.numa_node is None and gpu.interconnect_domain is None
    assert gpu.mig_parent_uuid is None


def test_idle_sample_holds_recorded_values():
    backend = NvmlBackend(replay_module())
    (s,) = backend.sample()
    snap = json.loads((FIXTURES / "nvml_snapshot.json").read_text())["devices"][0]
    assert s.power_w == snap["nvmlDeviceGetPowerUsage"]["ok"] / 1000
    assert s.energy_j == snap["nvmlDeviceGetTotalEnergyConsumption"]["ok"] / 1000
    assert s.temperature_c == snap["temperature_gpu"]["ok"]
    assert s.sm_clock_mhz == snap["clock_sm"]["ok"]
    assert s.throttle_reasons == 1  # GPU idle
    assert s.ecc_errors == 0 and s.xid_errors == 0 and s.healthy
    assert s.memory_used_mib == snap["nvmlDeviceGetMemoryInfo"]["ok"]["used"] / 2**20
    assert s.gpu_util_pct == 0 and s.mem_util_pct == 0
    # Process utilisation answers Not Found with no process: no processes, no error.
    assert backend.processes() == []


def test_two_tenant_series_replays_device_and_process_figures():
    nvml = replay_module()
    backend = NvmlBackend(nvml)
    series = json.loads((FIXTURES / "nvml_samples_2tenants.json").read_text())
    seen_util = 0
    while nvml.advance():
        rec = series[nvml.position]
        (s,) = backend.sample()
        assert s.gpu_util_pct == rec["util_gpu"] and s.mem_util_pct == rec["util_mem"]
        assert s.memory_used_mib == rec["mem_used_mib"]
        assert s.power_w == pytest.approx(rec["power_mw"] / 1000)
        procs = {p.pid: p for p in backend.processes()}
        assert {pid: p.memory_used_mib for pid, p in procs.items()} == {
            p["pid"]: p["used_mib"] for p in rec["procs"]
        }
        for util in rec.get("proc_util", []):
            assert procs[util["pid"]].sm_util_pct == util["sm"]
            seen_util += 1
        for pid, p in procs.items():
            if pid not in {u["pid"] for u in rec.get("proc_util", [])}:
                assert p.sm_util_pct is None  # NVML had no utilisation sample for it
    assert seen_util >= 10
    assert nvml.position == len(series) - 1


def test_xid_events_counted_and_critical_ones_mark_unhealthy():
    nvml = replay_module()
    backend = NvmlBackend(nvml)
    nvml.inject_xid(0, 13)  # graphics engine exception: an application fault, GPU fine
    (s,) = backend.sample()
    assert (s.xid_errors, s.last_xid, s.healthy) == (1, 13, True)
    nvml.inject_xid(0, 79)  # fallen off the bus
    (s,) = backend.sample()
    assert (s.xid_errors, s.last_xid, s.healthy) == (2, 79, False)
    assert backend.health() == {s.uuid: False}


def test_mig_devices_are_separate_accelerators():
    backend = NvmlBackend(replay_module(mig=["1g.10gb", "3g.40gb", "1g.10gb"]))
    accs = backend.discover()
    assert [a.model for a in accs] == ["H100-80GB-MIG-1g.10gb", "H100-80GB-MIG-3g.40gb",
                                       "H100-80GB-MIG-1g.10gb"]
    assert [a.memory_mib for a in accs] == [9984, 40448, 9984]
    assert [a.index for a in accs] == [0, 1, 2]
    assert len({a.uuid for a in accs}) == 3 and all(a.uuid.startswith("MIG-") for a in accs)
    assert {a.mig_parent_uuid for a in accs} == {"GPU-a0c8cd8f-d437-f731-22f6-e222de17099d"}
    assert all(a.compute_capability == "9.0" and a.labels["mig"] == "enabled" for a in accs)
    samples = backend.sample()
    # MIG devices answer memory but not utilisation/power: those fields stay None.
    assert [s.memory_used_mib for s in samples] == [0.0, 0.0, 0.0]
    assert all(s.gpu_util_pct is None and s.power_w is None and s.healthy for s in samples)


def test_unknown_mig_profile_is_named():
    with pytest.raises(ValueError, match="9g.99gb.*recorded: 1g.10gb"):
        replay_module(mig=["9g.99gb"])


def test_lost_gpu_reads_unhealthy_without_raising():
    nvml = replay_module()
    backend = NvmlBackend(nvml)

    def lost(handle):
        raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)

    nvml.nvmlDeviceGetUtilizationRates = lost
    nvml.nvmlDeviceGetComputeRunningProcesses = lost
    (s,) = backend.sample()
    assert s.healthy is False
    assert backend.processes() == []


def test_no_driver_here_raises_backend_unavailable():
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError_LibraryNotFound:
        pass
    else:
        pynvml.nvmlShutdown()
        pytest.skip("this machine has an NVIDIA driver")
    with pytest.raises(BackendUnavailable) as info:
        open_backend("nvml")
    message = str(info.value)
    assert "no NVIDIA driver found (libnvidia-ml.so" in message
    assert "--simulate" in message


def test_driver_not_loaded_and_permission_errors_are_explained():
    for code, words in ((pynvml.NVML_ERROR_DRIVER_NOT_LOADED, "no NVIDIA driver found"),
                        (pynvml.NVML_ERROR_NO_PERMISSION, "/dev/nvidia")):
        nvml = replay_module()

        def fail(code=code):
            raise pynvml.NVMLError(code)

        nvml.nvmlInit = fail
        with pytest.raises(BackendUnavailable, match=words):
            NvmlBackend(nvml)


def test_nvml_spec_takes_no_arguments():
    with pytest.raises(BackendUnavailable, match="takes no arguments"):
        open_backend("nvml:0")


def test_fixture_path_is_readable():
    assert Path(FIXTURES / "README.md").exists()
