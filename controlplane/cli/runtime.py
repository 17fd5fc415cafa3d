"""The CLI's seams to the server and agent packages (imported lazily so `gpupool jobs` stays fast)."""

from __future__ import annotations

import os
import re
from pathlib import Path

from controlplane.cli.errors import CliError


def gpupool_home() -> Path:
    """$GPUPOOL_HOME, else ~/.local/share/gpupool (where the SQLite database lives)."""
    if os.environ.get("GPUPOOL_HOME"):
        return Path(os.environ["GPUPOOL_HOME"]).expanduser().resolve()
    base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return (base / "gpupool").resolve()


def parse_shape(shape: str) -> tuple[int, int, str]:
    """'2x4xH100-80GB' -> (2, 4, 'H100-80GB'); '4xT4' -> (1, 4, 'T4'); clear error otherwise."""
    m = re.fullmatch(r"\s*(?:(\d+)x)?(?:(\d+)x)?([A-Za-z][A-Za-z0-9.\-]*)\s*", shape or "")
    if not m:
        raise CliError(f"--simulate {shape!r}: expected NODESxGPUSxMODEL like 2x4xH100-80GB")
    first, second, model = m.groups()
    nodes, gpus = (int(first), int(second)) if second else (1, int(first or 1))
    if not 1 <= nodes <= 64 or not 1 <= gpus <= 16:
        raise CliError(f"--simulate {shape!r}: nodes must be 1..64 and GPUs per node 1..16")
    return nodes, gpus, model


def has_nvidia_gpu() -> bool:
    """True when NVML answers with at least one GPU (a driver is installed)."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:
        return False
    try:
        return pynvml.nvmlDeviceGetCount() > 0
    except Exception:
        return False
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass


def run_server(host: str, port: int, **overrides) -> None:
    """Serve until interrupted; ``overrides`` (None ignored) win over GPUPOOL_* settings."""
    from controlplane.server import run_server as _run
    from controlplane.settings import Settings

    try:
        settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
        _run(host, port, settings)
    except ValueError as e:  # pydantic names the bad setting; TLS files that do not load
        raise CliError(f"invalid settings: {e}") from None


def run_agent(**overrides) -> None:
    """Run the node agent until SIGTERM; None options fall back to GPUPOOL_AGENT_* env / file."""
    from agent.config import ConfigError, load_config
    from agent.devices.base import BackendUnavailable
    from agent.main import run_agent as _run

    try:
        _run(load_config(overrides))
    except (ConfigError, BackendUnavailable) as e:
        raise CliError(str(e)) from None
