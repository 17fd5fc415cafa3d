"""The device allow-list of a job member: its slice's GPU nodes, the NVIDIA control nodes, basics.

Rules name real device numbers (``os.stat(...).st_rdev``), so the same code guards the real
``/dev/nvidia0`` and a test's stand-in made with ``mknod ... c 195 0`` under another root.
Everything else (other GPUs, block devices, other character devices) cannot be opened.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

# every process needs these; ptys for tools that want a terminal
BASIC_RULES = ("c 1:3 rwm", "c 1:5 rwm", "c 1:7 rwm", "c 1:8 rwm", "c 1:9 rwm", "c 5:0 rwm",
               "c 5:2 rwm", "c 136:* rwm",
               "c *:* m", "b *:* m")  # mknod only (needs CAP_MKNOD, which jobs lack): runc sets it too
CONTAINER_RULES = ("c 10:200 rwm",)  # runc grants /dev/net/tun to every container; a parent must too
# opened by every CUDA process (driver control, unified memory); modeset for some tools
CONTROL_NODES = ("nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset")


@dataclass(frozen=True, slots=True)
class DeviceNode:
    path: str
    kind: str  # "c" | "b"
    major: int
    minor: int

    @property
    def rule(self) -> str:
        return f"{self.kind} {self.major}:{self.minor} rw"


def device_node(path: str | Path) -> DeviceNode | None:
    """The node at ``path`` with its device numbers, or None when it is missing or not a device."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if stat.S_ISCHR(st.st_mode):
        kind = "c"
    elif stat.S_ISBLK(st.st_mode):
        kind = "b"
    else:
        return None
    return DeviceNode(str(path), kind, os.major(st.st_rdev), os.minor(st.st_rdev))


@dataclass(frozen=True, slots=True)
class DeviceGrant:
    """What one member may open: GPU nodes of its slice, control nodes, and why some are missing."""

    gpus: tuple[DeviceNode, ...]
    control: tuple[DeviceNode, ...]
    missing: tuple[str, ...]  # slice accelerators with no device node under the device root

    def rules(self, *, container: bool = False) -> tuple[str, ...]:
        extra = CONTAINER_RULES if container else ()
        return (*BASIC_RULES, *extra, *(n.rule for n in self.control), *(n.rule for n in self.gpus))

    @property
    def paths(self) -> list[str]:
        return [n.path for n in (*self.control, *self.gpus)]

    def describe(self) -> str:
        gpus = ", ".join(n.path for n in self.gpus) or "no GPU node"
        text = f"only {gpus} (+ {len(self.control)} NVIDIA control node(s)) of the NVIDIA devices"
        if self.missing:
            text += f"; no device node for {', '.join(self.missing)}"
        return text


def grant_for(uuids: list[str], minors: dict[str, int], device_root: str = "/dev") -> DeviceGrant:
    """The grant for accelerators ``uuids``; ``minors`` maps a UUID to its /dev/nvidiaN number."""
    root = Path(device_root)
    gpus, missing = [], []
    for uuid in uuids:
        node = device_node(root / f"nvidia{minors[uuid]}") if uuid in minors else None
        if node is None:
            missing.append(uuid)
        else:
            gpus.append(node)
    control = [n for n in (device_node(root / name) for name in CONTROL_NODES) if n is not None]
    return DeviceGrant(tuple(gpus), tuple(control), tuple(missing))
