"""Refuses to run beside the NVIDIA device plugin: Kubernetes would hand the node's GPUs to
ordinary pods while gpupool hands them to jobs, and both would land on the same GPU.

The device plugin serves ``nvidia-gpu.sock`` (``nvidia-mig-<profile>.sock`` with MIG) in the
kubelet's device-plugin directory while it runs. The agent looks there (mounted read-only in its
DaemonSet; ``GPUPOOL_DEVICE_PLUGIN_DIR`` moves it) before it starts on real GPUs. A socket nobody
listens on is a leftover of a stopped plugin: a warning, not a refusal.
``GPUPOOL_ALLOW_DEVICE_PLUGIN=1`` starts anyway (for a node where the plugin is known to expose
no GPU gpupool manages).
"""

from __future__ import annotations

import logging
import os
import socket
import stat
from pathlib import Path

from agent.config import ConfigError

log = logging.getLogger("gpupool.agent")
DEFAULT_DIR = "/var/lib/kubelet/device-plugins"
DIR_ENV = "GPUPOOL_DEVICE_PLUGIN_DIR"
ALLOW_ENV = "GPUPOOL_ALLOW_DEVICE_PLUGIN"


class DevicePluginPresent(ConfigError):
    """The NVIDIA device plugin serves this node's GPUs; the message says how to resolve it.

    A ConfigError, so `python -m agent` and `gpupool agent` both print it and exit 2.
    """


def _listening(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        try:
            s.connect(str(path))
            return True
        except OSError:
            return False


def nvidia_plugin_sockets(directory: Path) -> tuple[list[Path], list[Path]]:
    """(sockets a plugin serves, stale sockets) of NVIDIA's device plugin in ``directory``."""
    live, stale = [], []
    try:
        entries = sorted(directory.glob("nvidia*.sock"))
    except OSError:
        return [], []
    for path in entries:
        try:
            if not stat.S_ISSOCK(path.lstat().st_mode):
                continue
        except OSError:
            continue
        (live if _listening(path) else stale).append(path)
    return live, stale


def check_device_plugin(backend: str, environ: dict[str, str] | None = None) -> None:
    """Raise DevicePluginPresent when NVIDIA's device plugin serves GPUs this agent would manage."""
    env = os.environ if environ is None else environ
    if not backend.startswith("nvml"):
        return  # simulated or other vendors' accelerators: nothing the NVIDIA plugin hands out
    directory = Path(env.get(DIR_ENV) or DEFAULT_DIR)
    live, stale = nvidia_plugin_sockets(directory)
    for path in stale:
        log.warning("stale NVIDIA device plugin socket %s (no plugin listens on it); starting", path)
    if not live:
        return
    names = ", ".join(str(p) for p in live)
    if env.get(ALLOW_ENV, "").strip().lower() in ("1", "true", "yes"):
        log.warning("the NVIDIA device plugin serves this node (%s); starting anyway because %s is "
                    "set: pods requesting nvidia.com/gpu may share GPUs with gpupool jobs", names, ALLOW_ENV)
        return
    raise DevicePluginPresent(
        f"the NVIDIA device plugin is registered on this node ({names}), so Kubernetes can also "
        "give this node's GPUs to ordinary pods. Keep it off gpupool nodes: add the component "
        "deploy/kubernetes/components/nvidia-device-plugin-exclusion to the plugin's kustomization, "
        "or with the GPU operator label the node nvidia.com/gpu.deploy.device-plugin=false "
        f"(docs/deploy.md). To start anyway, set {ALLOW_ENV}=1.")
