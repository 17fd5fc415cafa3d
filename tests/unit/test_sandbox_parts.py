"""Sandbox pieces that need no root: cgroup detection, v2 scopes, uid allocation, podman argv, MPS per uid.

The kernel-facing behaviour is tested on the real thing in tests/integration/test_sandbox_*.py.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from pathlib import Path

import pytest

from agent.enforce.mps import MpsController
from agent.runtime.container import ContainerRun, ContainerRuntime, cdi_gpu_devices, run_argv
from agent.sandbox.cgroups import CgroupSupport, JobCgroup, Limits, detect_cgroups
from agent.sandbox.identity import IdentityPool, parse_range
from controlplane.core.wire import JobIdentity, StartOrder

HYBRID = """cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0
cgroup /sys/fs/cgroup/cpuacct cgroup rw,relatime,cpuacct 0 0
cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0
cgroup /sys/fs/cgroup/devices cgroup rw,relatime,devices 0 0
cgroup /sys/fs/cgroup/pids cgroup rw,relatime,pids 0 0
cgroup /sys/fs/cgroup/freezer cgroup rw,relatime,freezer 0 0
cgroup /sys/fs/cgroup/systemd cgroup rw,relatime,name=systemd 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0
"""
UNIFIED = "cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid,nodev,noexec,relatime,nsdelegate 0 0\n"


def test_detects_hybrid_v1_and_unified_v2():
    v1 = detect_cgroups(HYBRID)
    assert v1.version == "v1" and v1.mounts["memory"] == "/sys/fs/cgroup/memory" and v1.detail == "cgroup v1"
    cg = JobCgroup(v1, "gpupool", "k-7")
    assert cg.procs_root == "/sys/fs/cgroup/freezer/gpupool/k-7" and cg.kill_file is None
    assert "/sys/fs/cgroup/devices/gpupool/k-7/cgroup.procs" in cg.join_files()
    v2 = detect_cgroups(UNIFIED, systemd=False)
    assert (v2.version, v2.detail) == ("v2", "cgroup v2 without systemd")
    assert JobCgroup(v2, "gpupool", "k-7").kill_file == "/sys/fs/cgroup/gpupool/k-7/cgroup.kill"
    assert detect_cgroups("proc /proc proc rw 0 0\n").version == "none"
    assert "no cpu, devices" in detect_cgroups("cgroup /m cgroup rw,memory 0 0\ncgroup /p cgroup rw,pids 0 0\n").detail


def test_v2_with_systemd_runs_members_in_transient_scopes():
    support = CgroupSupport("v2", {"": "/sys/fs/cgroup"}, systemd=True, detail="cgroup v2 with systemd")
    cg = JobCgroup(support, "gpupool", "k-7")
    assert cg.rel == "gpupool.slice/gpupool-k-7.scope" and cg.join_files() == []
    limits = Limits(cpu_milli=500, memory_mib=2048, pids_max=100, devices=("c 195:0 rw",))
    argv = cg.scope_argv(limits, ["/dev/nvidiactl", "/dev/nvidia0"], 300000, 300000)
    assert argv[:2] == ["systemd-run", "--scope"] and argv[-1] == "--"
    props = [argv[i + 1] for i, a in enumerate(argv) if a == "-p"]
    assert props == ["CPUQuota=50%", "MemoryMax=2048M", "MemorySwapMax=0", "TasksMax=100", "DevicePolicy=closed",
                     "DeviceAllow=/dev/nvidiactl rw", "DeviceAllow=/dev/nvidia0 rw"]
    assert "--uid=300000" in argv and "--unit=gpupool-k-7.scope" in argv
    enforcement = cg.create(limits)
    assert enforcement["devices"].startswith("systemd transient scope gpupool-k-7.scope")


def _order(job: str, team: str | None) -> StartOrder:
    return StartOrder(job_id=job, attempt_id=job + "-a", epoch=1, name=job, argv=["true"],
                      identity=JobIdentity(team=team, queue="q") if team else None)


def test_uids_per_team_stable_and_never_reserved(tmp_path):
    pool = IdentityPool(tmp_path / "ids.json", "300000-300002")
    a, b = pool.for_order(_order("1", "ml")), pool.for_order(_order("2", "nlp"))
    assert a.uid != b.uid and a.uid == a.gid and 0 not in (a.uid, b.uid)
    again = IdentityPool(tmp_path / "ids.json", "300000-300002")  # an agent restart
    assert again.for_order(_order("3", "ml")).uid == a.uid
    assert again.for_order(_order("4", None)).key == "job:4"  # no identity: a uid of its own
    with pytest.raises(RuntimeError, match="exhausted"):
        again.for_order(_order("5", "cv"))
    per_job = IdentityPool(tmp_path / "jobs.json", "300100-300199", scope="job")
    x, y = per_job.for_order(_order("1", "ml")), per_job.for_order(_order("2", "ml"))
    assert x.uid != y.uid
    per_job.release({"job:1"})
    assert per_job.for_order(_order("9", "ml")).uid == x.uid  # freed with its job's directory
    assert os.stat(tmp_path / "ids.json").st_mode & 0o777 == 0o600


@pytest.mark.parametrize("text", ["0-100", "5000-4000", "x", "", "1000-4294967295"])
def test_bad_uid_ranges(text):
    with pytest.raises(ValueError, match="uid range"):
        parse_range(text)


def test_podman_argv_keeps_secrets_out_and_applies_limits(tmp_path):
    rt = ContainerRuntime("podman", "/usr/bin/podman")
    run = ContainerRun(image="img:1", name="gpupool-k-1", argv=["python", "-m", "x"], env_names=["HF_TOKEN"],
                       cwd="/w", mounts=["/w"], uid=300000, gid=300000, device_paths=["/dev/nvidia3"],
                       gpu_uuids=["GPU-1"], limits=Limits(500, 1024, 64), env_values={"HOME": "/w"})
    argv, enforcement = run_argv(rt, run)
    joined = " ".join(argv)
    assert argv[:4] == ["/usr/bin/podman", "--runtime", "runc", "run"]
    assert "--ulimit nofile=1024:1024 --ulimit nproc=1024:1024" in joined
    assert "--env HF_TOKEN " in joined and "--env HOME=/w" in joined and "--user 300000:300000" in joined
    assert "--memory 1024m --memory-swap 1024m --cpus 0.5 --pids-limit 64" in joined
    assert "--device /dev/nvidia3:/dev/nvidia3" in joined and "--network host" in joined
    assert argv[-4:] == ["img:1", "python", "-m", "x"] and enforcement["memory"] == "podman --memory 1024m"
    nested, _ = run_argv(rt, ContainerRun(image="i", name="n", argv=["a"], env_names=[], cwd="/", mounts=[],
                                          cgroup_parent="/gpupool/k-1"))
    assert "--cgroup-parent /gpupool/k-1" in " ".join(nested) and "--memory" not in nested
    cdi_dir = tmp_path / "cdi"
    cdi_dir.mkdir()
    (cdi_dir / "nvidia.yaml").write_text("kind: nvidia.com/gpu\ndevices:\n- name: GPU-1\n")
    assert cdi_gpu_devices(["GPU-1"], (str(cdi_dir),)) == ["nvidia.com/gpu=GPU-1"]
    assert cdi_gpu_devices(["GPU-2"], (str(cdi_dir),)) is None
    with_cdi, enf = run_argv(rt, run, cdi=["nvidia.com/gpu=GPU-1"])
    assert "--device nvidia.com/gpu=GPU-1" in " ".join(with_cdi) and "/dev/nvidia3" not in " ".join(with_cdi)


FAKE_MPS = """#!/bin/sh
echo "uid=$(id -u) args=$* pipe=$CUDA_MPS_PIPE_DIRECTORY visible=$CUDA_VISIBLE_DEVICES" >> "$MPS_CALLS"
if [ "$1" = "-d" ]; then touch "$CUDA_MPS_PIPE_DIRECTORY/control"; exit 0; fi
read cmd
echo "cmd=$cmd" >> "$MPS_CALLS"
[ "$cmd" = "quit" ] && rm -f "$CUDA_MPS_PIPE_DIRECTORY/control"
exit 0
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="starting a daemon as another uid needs root")
def test_mps_daemon_per_uid_and_accelerator(monkeypatch):
    tmp_path = Path(tempfile.mkdtemp(prefix="gpupool-mps-"))  # pytest's tmp is 0700: the daemon's uid
    try:                                                       # must reach its binary and pipe dir
        _mps_daemon_per_uid(tmp_path, monkeypatch)
    finally:
        shutil.rmtree(tmp_path, ignore_errors=True)


def _mps_daemon_per_uid(tmp_path, monkeypatch):
    tmp_path.chmod(0o755)
    binary = tmp_path / "bin" / "nvidia-cuda-mps-control"
    binary.parent.mkdir(mode=0o755)
    binary.write_text(FAKE_MPS)
    binary.chmod(0o755)
    calls = tmp_path / "calls.txt"
    calls.write_text("")
    calls.chmod(0o666)
    monkeypatch.setenv("MPS_CALLS", str(calls))
    shared = tmp_path / "mps"
    mps = MpsController("managed", tmp_path / "state", binary=str(binary), shared_dir=shared)
    s = mps.settings(300000, 300000, "GPU-1")
    assert s.available and s.pipe_dir == str(shared / "300000-GPU-1" / "pipe")
    pipe = shared / "300000-GPU-1" / "pipe"
    assert pipe.stat().st_uid == 300000 and stat.S_IMODE(pipe.stat().st_mode) == 0o700
    assert "uid=300000 args=-d" in calls.read_text() and "visible=GPU-1" in calls.read_text()
    other = mps.settings(300001, 300001, "GPU-1")
    assert other.pipe_dir != s.pipe_dir  # another team: its own server on the same GPU
    mps.release(300000, 300000, "GPU-1")
    assert not (pipe / "control").exists() and (shared / "300001-GPU-1" / "pipe" / "control").exists()
    mps.stop()
    assert not (shared / "300001-GPU-1" / "pipe" / "control").exists()
