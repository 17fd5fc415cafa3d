"""Device backends: one module per vendor behind the DeviceBackend protocol.

``open_backend(spec)`` picks one by name:
  "nvml"                       the NVIDIA GPUs of this machine (raises BackendUnavailable without a driver)
  "simulate:2x4xH100-80GB"     simulated GPUs: nodes x gpus x model (this agent is one node: 4 GPUs)
  "simulate:4xA100-40GB"       4 simulated GPUs;  "simulate:T4" one;  "simulate" one H100-80GB
  "ascend"                     Huawei Ascend (stub: raises BackendUnavailable)
Another vendor is one module plus one ``register_backend(name, factory)`` call.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from typing import Any

from agent.devices.base import BackendUnavailable, DeviceBackend, ProcessUsage

__all__ = [
    "BackendUnavailable",
    "DeviceBackend",
    "ProcessUsage",
    "open_backend",
    "parse_simulate_spec",
    "register_backend",
    "backend_names",
]

Factory = Callable[[str, dict[str, Any]], DeviceBackend]
_FACTORIES: dict[str, Factory] = {}


def register_backend(name: str, factory: Factory) -> None:
    """Make ``open_backend("name[:args]")`` call ``factory(args, options)``."""
    _FACTORIES[name] = factory


def backend_names() -> list[str]:
    return sorted(_FACTORIES)


def parse_simulate_spec(args: str) -> tuple[int, int, str]:
    """ "2x4xH100-80GB" -> (2, 4, "H100-80GB"); "4xT4" -> (1, 4, "T4"); "" -> (1, 1, "H100-80GB")."""
    if not args:
        return 1, 1, "H100-80GB"
    match = re.fullmatch(r"(?:(\d+)x)?(?:(\d+)x)?([A-Za-z][A-Za-z0-9.\-]*)", args.strip())
    if not match:
        raise BackendUnavailable(
            f"bad simulate spec {args!r}: expected NODESxGPUSxMODEL like '2x4xH100-80GB', "
            "GPUSxMODEL like '4xA100-40GB', or a MODEL"
        )
    first, second, model = match.groups()
    if second is not None:
        nodes, gpus = int(first), int(second)
    else:
        nodes, gpus = 1, int(first) if first is not None else 1
    if nodes < 1 or gpus < 1:
        raise BackendUnavailable(f"bad simulate spec {args!r}: node and gpu counts must be >= 1")
    return nodes, gpus, model


def open_backend(spec: str, **options: Any) -> DeviceBackend:
    """Open the backend ``spec`` names ("nvml", "simulate:2x4xH100-80GB", ...).

    Options go to the backend: ``seed`` and ``node`` (simulated: different nodes get different
    UUIDs), ``nvml`` (a pynvml-shaped module, for tests). Raises BackendUnavailable with a
    message a person can act on; never falls back to another backend.
    """
    name, _, args = (spec or "").strip().partition(":")
    if name == "simulated":
        name = "simulate"
    factory = _FACTORIES.get(name)
    if factory is None:
        raise BackendUnavailable(
            f"unknown device backend {spec!r}: use one of {', '.join(backend_names())} "
            "(e.g. 'nvml' or 'simulate:1x4xH100-80GB')"
        )
    return factory(args, options)


def _lazy(module: str, attr: str) -> Factory:
    def factory(args: str, options: dict[str, Any]) -> DeviceBackend:
        return getattr(importlib.import_module(module), attr)(args, options)

    return factory


register_backend("nvml", _lazy("agent.devices.nvml", "from_spec"))
register_backend("simulate", _lazy("agent.devices.simulated", "from_spec"))
register_backend("ascend", _lazy("agent.devices.ascend", "from_spec"))
