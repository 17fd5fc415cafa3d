"""The agent refuses to start on a node where NVIDIA's device plugin serves the GPUs: with a real
listening unix socket named like the plugin's, in-process, as `python -m agent`, and in the agent
image with the socket's directory mounted as the DaemonSet mounts it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.coexistence import ALLOW_ENV, DIR_ENV, DevicePluginPresent, check_device_plugin
from tests.deploy.containers import Containers, build_images, engine_command

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def plugin_dir(tmp_path: Path) -> Iterator[Path]:
    """A kubelet device-plugin directory where a plugin listens on nvidia-gpu.sock."""
    directory = tmp_path / "device-plugins"
    directory.mkdir()
    os.chmod(directory, 0o755)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(directory / "nvidia-gpu.sock"))
    os.chmod(directory / "nvidia-gpu.sock", 0o777)
    server.listen(8)
    yield directory
    server.close()


def test_a_listening_plugin_socket_stops_an_nvml_agent(plugin_dir: Path) -> None:
    with pytest.raises(DevicePluginPresent) as err:
        check_device_plugin("nvml", {DIR_ENV: str(plugin_dir)})
    message = str(err.value)
    assert "nvidia-gpu.sock" in message and ALLOW_ENV in message and "nvidia-device-plugin-exclusion" in message
    check_device_plugin("nvml", {DIR_ENV: str(plugin_dir), ALLOW_ENV: "1"})  # the override
    check_device_plugin("simulate:1x2xH100-80GB", {DIR_ENV: str(plugin_dir)})  # not NVIDIA GPUs


def test_stale_sockets_and_other_files_do_not_stop_the_agent(tmp_path: Path) -> None:
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(tmp_path / "nvidia-mig-1g.10gb.sock"))
    stale.close()  # the file stays, nobody listens: a plugin that stopped
    (tmp_path / "nvidia-notes.sock").write_text("not a socket")
    kubelet = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    kubelet.bind(str(tmp_path / "kubelet.sock"))
    kubelet.listen(1)
    try:
        check_device_plugin("nvml", {DIR_ENV: str(tmp_path)})
    finally:
        kubelet.close()
    check_device_plugin("nvml", {DIR_ENV: str(tmp_path / "missing")})


def test_python_m_agent_exits_with_the_reason(plugin_dir: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPUPOOL_")}
    env[DIR_ENV] = str(plugin_dir)
    result = subprocess.run([sys.executable, "-m", "agent", "--server", "http://127.0.0.1:9", "--token", "x",
                             "--backend", "nvml", "--state-dir", str(tmp_path / "state"), "--exporter-port", "0"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "NVIDIA device plugin is registered on this node" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.timeout(1800)
def test_the_agent_image_refuses_on_a_device_plugin_node(plugin_dir: Path) -> None:
    c = Containers(engine_command())
    image = build_images("agent-slim")["agent-slim"]
    result = c.run_once(image, "--server", "http://127.0.0.1:9", "--token", "x", "--backend", "nvml",
                        "--exporter-port", "0",
                        options=("-v", f"{plugin_dir}:/var/lib/kubelet/device-plugins:ro"))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "NVIDIA device plugin is registered on this node" in result.stderr
