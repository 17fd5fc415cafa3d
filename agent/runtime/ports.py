"""Free TCP port allocation for jobs (GPUPOOL_PORT..., MASTER_PORT), avoiding ports jobs hold."""

from __future__ import annotations

import socket


def free_ports(count: int, taken: set[int] | None = None) -> list[int]:
    """``count`` ports the kernel reports free now and that no other job was given."""
    taken = set(taken or ())
    out: list[int] = []
    socks = []
    try:
        while len(out) < count:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("0.0.0.0", 0))
            socks.append(s)
            port = s.getsockname()[1]
            if port not in taken:
                out.append(port)
                taken.add(port)
    finally:
        for s in socks:
            s.close()
    return out
