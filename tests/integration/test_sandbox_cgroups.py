"""A cgroup per job member, on the real kernel: no orphans, memory and CPU limits, device rules, pids.

Device isolation uses real character devices with NVIDIA's major number made with mknod under a
scratch device root: the job's own stand-in opens as far as the kernel goes without a driver
(ENXIO), the other GPU's is refused by the cgroup (EPERM), whatever CUDA_VISIBLE_DEVICES says.
"""

from __future__ import annotations

import json
import os
import time

from agent.devices.simulated import SimulatedBackend
from agent.enforce.mps import MpsController
from agent.runtime.manager import Runtime
from agent.sandbox.policy import Sandbox
from controlplane.core.wire import SliceSpec, StatusKind
from tests.integration.sandbox_support import (Reports, cgroup_of, finished, host, job_python,  # noqa: F401
                                               make_runtime, order, processes_with, stdout, until, world)
from tests.support.waiting import wait_until


def _gone(marker: str) -> bool:
    return not processes_with(marker)


def test_background_and_setsid_children_do_not_outlive_the_job(world):
    rt, reports = make_runtime(world)
    # ends at once, leaving a background sleep and a setsid'd one behind
    rt.start(order("o1", ["bash", "-c", "sleep 6171 & setsid sleep 6172 & echo started; exit 0"]))
    report = finished(rt, "o1")
    assert report["exit_code"] == 0 and "started" in stdout(rt, "o1")
    assert _gone("sleep 6171") and _gone("sleep 6172")


def test_cancel_kills_a_double_forked_daemon(world):
    rt, reports = make_runtime(world)
    daemon = "( setsid bash -c 'sleep 6173 & exit 0' & ); setsid sleep 6174 & echo ready; sleep 6175"
    rt.start(order("o2", ["bash", "-c", daemon], grace_s=1.0))
    until(rt, lambda: "ready" in stdout(rt, "o2") and processes_with("sleep 6173"), what="daemon up")
    assert rt.stop("o2", "cancelled by user", 1.0)
    report = finished(rt, "o2")
    assert report["kind"] == StatusKind.KILLED and report["reason"] == "cancelled by user"
    wait_until(lambda: all(_gone(f"sleep {n}") for n in (6173, 6174, 6175)), 10, "no leftovers")
    assert not os.path.exists(cgroup_of(rt, "o2").procs_root)  # the cgroup went with them


def test_memory_limit_stops_the_job_with_the_reason(world):
    rt, reports = make_runtime(world)
    hog = "x = []\nwhile True: x.append(bytearray(8 << 20))"
    rt.start(order("m1", [job_python(), "-c", hog], mem=64))
    assert "64 MiB" in rt.job("m1").record["enforcement"]["memory"]
    report = finished(rt, "m1", timeout=60)
    assert report["kind"] == StatusKind.EXITED and report["exit_code"] == 137
    assert report["reason"].startswith("host memory limit exceeded: ")


def test_half_a_core_stays_half_a_core(world):
    rt, reports = make_runtime(world)
    rt.start(order("c1", ["bash", "-c", "echo spinning; while :; do :; done"], cpu=500, grace_s=0.5))
    until(rt, lambda: "spinning" in stdout(rt, "c1"), what="busy loop up")
    cg = cgroup_of(rt, "c1")
    before, t0 = cg.usage().cpu_ns, time.monotonic()
    time.sleep(5.0)  # the measurement window itself
    used_s, window = (cg.usage().cpu_ns - before) / 1e9, time.monotonic() - t0
    rt.stop("c1", "done", 0)
    finished(rt, "c1")
    assert 0 < used_s <= 0.55 * window, f"{used_s:.2f} s of CPU in {window:.2f} s"


def test_only_the_slice_gpu_device_opens(world):
    root, _ = world
    dev = root / "dev"
    dev.mkdir(mode=0o755)
    for name, minor in (("nvidia0", 0), ("nvidia1", 1), ("nvidiactl", 255)):
        os.mknod(dev / name, 0o20666, os.makedev(195, minor))  # S_IFCHR, rw for everyone like the driver's
        os.chmod(dev / name, 0o666)
    backend = SimulatedBackend(gpus=2, model="H100-80GB", node="n1")
    gpu0, gpu1 = [a.uuid for a in backend.discover()]
    rt, reports = make_runtime(world, backend=backend, device_root=str(dev))
    probe = ("import json, os, sys\nout = {}\nfor name in sys.argv[1:]:\n"
             "    try:\n        os.close(os.open(name, os.O_RDWR)); out[name] = 'opened'\n"
             "    except OSError as exc:\n        out[name] = os.strerror(exc.errno)\n"
             "print(json.dumps(out))")
    slices = [SliceSpec(accelerator_uuid=gpu0, compute_milli=500, memory_mib=40000, device_memory_mib=81559)]
    names = [str(dev / n) for n in ("nvidia0", "nvidia1", "nvidiactl")]
    # the job drops CUDA_VISIBLE_DEVICES: visibility was never the guard
    rt.start(order("d1", ["env", "-u", "CUDA_VISIBLE_DEVICES", job_python(), "-c", probe, *names],
                   slices=slices))
    report = finished(rt, "d1")
    assert report["exit_code"] == 0, (rt.job("d1").job_dir / "stderr.log").read_text()
    seen = json.loads(stdout(rt, "d1"))
    assert seen[names[0]] == "No such device or address"  # its own GPU: allowed (no driver here)
    assert seen[names[1]] == "Operation not permitted"  # the other GPU: EPERM from the cgroup
    assert seen[names[2]] == "No such device or address"  # control node: allowed
    assert "c 195:0 rw" in rt.job("d1").record["enforcement"]["devices"]
    assert "c 195:1" not in rt.job("d1").record["enforcement"]["devices"]


def test_pids_limit_holds_a_fork_storm(world):
    rt, reports = make_runtime(world, pids_max=40)
    storm = ("import os, time\nn = 0\nfor _ in range(100):\n    try:\n        pid = os.fork()\n"
             "    except OSError as exc:\n        print('refused', os.strerror(exc.errno)); break\n"
             "    if pid == 0:\n        time.sleep(6176); os._exit(0)\n    n += 1\nprint('forked', n)")
    rt.start(order("p1", [job_python(), "-c", storm], grace_s=0.5))
    report = finished(rt, "p1")
    assert report["exit_code"] == 0
    out = stdout(rt, "p1")
    assert "refused Resource temporarily unavailable" in out and int(out.split()[-1]) < 40
    wait_until(lambda: _gone("6176"), 10, "storm reaped")


def test_enforcement_report_names_the_layers(world, host):
    rt, reports = make_runtime(world)
    rt.start(order("e1", ["/bin/true"], cpu=250, mem=128))
    finished(rt, "e1")
    enforcement = rt.job("e1").record["enforcement"]
    assert enforcement["cgroup"].startswith(host.detail)
    assert "250 milli" in enforcement["cpu"] and "128 MiB" in enforcement["memory"]
    assert "pids" in enforcement and "identity" in enforcement


def test_restarted_agent_readopts_and_still_stops_the_whole_member(world):
    rt, reports = make_runtime(world)
    rt.start(order("r1", ["bash", "-c", "setsid sleep 6177 & echo up; sleep 6178"]))
    until(rt, lambda: "up" in stdout(rt, "r1") and processes_with("sleep 6177"), what="job up")
    root, runtimes = world
    again = Runtime(rt.state, node_name="n1", address="127.0.0.1", report=Reports(), mps=MpsController("off", root),
                    sandbox=Sandbox(mode="on", state_root=rt.state.root, jobs_root=root / "jobs",
                                    cgroup_parent=rt.sandbox.cgroup_parent),
                    log_flush_s=0.3)
    runtimes.append(again)
    assert again.adopt_all() == ["r1"] and again.job("r1").proc.cgroup is not None
    assert again.stop("r1", "cancelled after restart", 1.0)
    report = finished(again, "r1")
    assert report["kind"] == StatusKind.KILLED and report["exit_code"] == 143
    wait_until(lambda: _gone("sleep 6177") and _gone("sleep 6178"), 10, "no leftovers")
