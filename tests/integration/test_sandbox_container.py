"""Jobs whose spec names an image run in a real podman container, with the member's sandbox.

No registry: the test image is built once on this machine from the host's own sh, id, ls, cat and
sleep with their libraries (``podman import``), and reused while present. The job prints its uid
and its /dev, sees only its own stand-in GPU node, streams logs while running, stops on cancel,
and reports its exit code; the container is nested under the member's cgroup.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from agent.devices.simulated import SimulatedBackend
from controlplane.core.wire import SliceSpec, StatusKind
from tests.integration.sandbox_support import (finished, host, make_runtime, need, order, stdout,  # noqa: F401
                                               until, world)

IMAGE = "localhost/gpupool-test-hostbins:1"
BINARIES = ("/bin/sh", "/usr/bin/id", "/bin/ls", "/bin/cat", "/bin/sleep", "/bin/echo")


def _libraries(binary: str) -> list[str]:
    out = subprocess.run(["ldd", binary], capture_output=True, text=True).stdout
    return [p for p in (w for line in out.splitlines() for w in line.split()) if p.startswith("/")]


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    podman = shutil.which("podman")
    need(podman is not None, "podman is not installed (apt-get install -y podman runc)")
    need(os.geteuid() == 0, "container jobs need root (rootful podman)")
    if subprocess.run([podman, "image", "exists", IMAGE]).returncode == 0:
        return IMAGE
    tar_path = tmp_path_factory.mktemp("image") / "rootfs.tar"
    with tarfile.open(tar_path, "w") as tar:
        for d in ("dev", "proc", "sys", "tmp", "etc"):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if d == "tmp" else 0o755
            tar.addfile(info)
        for path in {p for b in BINARIES for p in (b, *_libraries(b))}:
            tar.add(os.path.realpath(path), arcname=path.lstrip("/"))
    res = subprocess.run([podman, "import", str(tar_path), IMAGE], capture_output=True, text=True)
    need(res.returncode == 0, f"cannot build the test image: {res.stderr.strip()}")
    return IMAGE


def _gpu_world(world) -> tuple[Path, SimulatedBackend]:
    root, _ = world
    dev = root / "dev"
    dev.mkdir(mode=0o755)
    for name, minor in (("nvidia0", 0), ("nvidia1", 1)):
        os.mknod(dev / name, 0o20666, os.makedev(195, minor))
        os.chmod(dev / name, 0o666)
    return dev, SimulatedBackend(gpus=2, model="H100-80GB", node="n1")


def _containers(name_part: str) -> list[str]:
    res = subprocess.run(["podman", "ps", "-a", "--format", "{{.Names}}"], capture_output=True, text=True)
    return [n for n in res.stdout.split() if name_part in n]


def test_container_job_uid_devices_logs_and_exit_code(world, image):
    dev, backend = _gpu_world(world)
    gpu0 = backend.discover()[0].uuid
    rt, reports = make_runtime(world, backend=backend, device_root=str(dev))
    slices = [SliceSpec(accelerator_uuid=gpu0, compute_milli=500, memory_mib=40000, device_memory_mib=81559)]
    script = ("echo uid=$(id -u); echo dev: $(ls /dev); cat /dev/nvidia0 2>&1; "
              "echo token=${GPUPOOL_AGENT_TOKEN:-none} home=$HOME; echo spec=$(cat $GPUPOOL_SPEC_FILE); exit 7")
    rt.start(order("k1", ["/bin/sh", "-c", script], slices=slices, image=image, mem=256, cpu=500,
                   spec={"model": "tiny"}))
    report = finished(rt, "k1", timeout=120)
    out = stdout(rt, "k1")
    job = rt.job("k1")
    assert report["kind"] == StatusKind.EXITED and report["exit_code"] == 7, out + job.job_dir.joinpath(
        "stderr.log").read_text()
    assert f"uid={job.record['sandbox']['uid']}" in out and "uid=0" not in out
    assert "nvidia0" in out and "nvidia1" not in out  # only its own stand-in
    assert "No such device or address" in out  # its own node opens as far as the kernel goes
    assert f"token=none home={job.record['sandbox']['work_dir']}" in out and '"model": "tiny"' in out
    enforcement = job.record["enforcement"]
    assert image in enforcement["container"] and "nested" in enforcement["container"]
    assert "c 195:0 rw" in enforcement["devices"]
    assert _containers(f"-k1") == []  # removed after it exited


def test_container_job_streams_logs_and_stops_on_cancel(world, image):
    rt, reports = make_runtime(world)
    rt.start(order("k2", ["/bin/sh", "-c", "echo first; sleep 6181; echo never"], image=image, grace_s=5.0))
    until(rt, lambda: "first" in stdout(rt, "k2"), timeout=120, what="container output while running")
    assert rt.job("k2").state == "running"
    assert rt.stop("k2", "cancelled by user", 5.0)
    report = finished(rt, "k2", timeout=60)
    assert report["kind"] == StatusKind.KILLED and report["reason"] == "cancelled by user"
    assert report["exit_code"] == 143  # SIGTERM reached the command through the container's init
    assert "never" not in stdout(rt, "k2") and _containers("-k2") == []
