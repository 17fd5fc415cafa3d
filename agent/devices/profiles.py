"""Accelerator profiles from public spec sheets, and model-name normalisation ("H100-80GB").

The simulated backend takes identity and figures from a profile; the NVML backend uses
``normalise_model`` so the scheduler sees the same model names from real and simulated nodes.
Idle figures for the H100 come from the recordings in ../shared/fixtures/nvml-h100.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Profile:
    """What one accelerator model looks like to the agent (spec-sheet figures)."""

    model: str  # normalised name, e.g. "H100-80GB"
    name: str  # the vendor's product name as the driver reports it
    vendor: str
    memory_mib: int  # total memory the driver reports
    tdp_w: float  # board power limit
    idle_w: float
    max_sm_clock_mhz: int
    idle_sm_clock_mhz: int
    compute_capability: str | None
    idle_temp_c: float = 32.0
    max_temp_c: float = 78.0
    idle_used_mib: int = 0  # memory the driver itself holds on an idle device


PROFILES: dict[str, Profile] = {
    p.model: p
    for p in (
        # H100 SXM5: 700 W, 1980 MHz boost; idle figures from the recorded H100.
        Profile("H100-80GB", "NVIDIA H100 80GB HBM3", "nvidia", 81559, 700, 70, 1980, 345, "9.0",
                idle_used_mib=480),
        Profile("A100-80GB", "NVIDIA A100-SXM4-80GB", "nvidia", 81920, 400, 60, 1410, 210, "8.0",
                idle_used_mib=420),
        Profile("A100-40GB", "NVIDIA A100-SXM4-40GB", "nvidia", 40960, 400, 55, 1410, 210, "8.0",
                idle_used_mib=420),
        Profile("L40S", "NVIDIA L40S", "nvidia", 46068, 350, 35, 2520, 210, "8.9",
                idle_used_mib=300),
        Profile("T4", "Tesla T4", "nvidia", 15360, 70, 10, 1590, 300, "7.5", idle_used_mib=100),
        Profile("V100-16GB", "Tesla V100-SXM2-16GB", "nvidia", 16384, 300, 40, 1530, 135, "7.0",
                idle_used_mib=300),
        Profile("V100-32GB", "Tesla V100-SXM2-32GB", "nvidia", 32768, 300, 40, 1530, 135, "7.0",
                idle_used_mib=300),
        # Huawei Ascend 910B: 64 GB HBM2e, ~400 W (Atlas 800T A2 spec sheet), 1800 MHz AI core.
        Profile("Ascend-910B", "Ascend910B", "huawei", 65536, 400, 70, 1800, 1800, None,
                idle_used_mib=2800),
    )
}

# Families sold in more than one memory size carry the size in their normalised model name.
_SIZED_FAMILIES = ("A100", "A800", "H100", "H800", "H200", "H20", "B200", "V100", "GH200")
_NOMINAL_GB = (8, 12, 16, 24, 32, 40, 48, 64, 80, 94, 96, 141, 144, 180, 192)


def nominal_gb(memory_mib: int) -> int:
    """The marketed memory size closest to what the driver reports (81559 MiB -> 80)."""
    gib = memory_mib / 1024
    return min(_NOMINAL_GB, key=lambda gb: abs(gb - gib))


def normalise_model(name: str, memory_mib: int) -> str:
    """Vendor product name -> gpupool model name.

    "NVIDIA H100 80GB HBM3" -> "H100-80GB", "NVIDIA A100-SXM4-40GB" -> "A100-40GB",
    "Tesla T4" -> "T4", "NVIDIA L40S" -> "L40S", "Tesla V100-SXM2-16GB" -> "V100-16GB",
    "NVIDIA H100 80GB HBM3 MIG 1g.10gb" -> "H100-80GB-MIG-1g.10gb".
    """
    text = name.strip()
    mig = ""
    match = re.search(r"\bMIG\s+(\S+)$", text)
    if match:
        mig = f"-MIG-{match.group(1)}"
        text = text[: match.start()].strip()
    text = re.sub(r"^(NVIDIA|Tesla|Quadro|GeForce)\s+", "", text)
    text = re.sub(r"^(NVIDIA|Tesla)\s+", "", text)
    tokens = re.split(r"[\s\-_]+", text)
    family = tokens[0] if tokens else text
    if family.startswith("Ascend") and family != "Ascend":
        return "Ascend-" + family.removeprefix("Ascend")
    if family.upper() in _SIZED_FAMILIES:
        sized = re.search(r"(\d+)\s*GB", text, re.IGNORECASE)
        gb = int(sized.group(1)) if sized else nominal_gb(memory_mib)
        return f"{family.upper()}-{gb}GB{mig}"
    return family + mig


def profile_for(model: str) -> Profile:
    """The profile of ``model``; an unknown model with a size ("RTX6000-48GB") gets a generic one."""
    if model in PROFILES:
        return PROFILES[model]
    sized = re.fullmatch(r"([A-Za-z0-9.]+)-(\d+)GB", model)
    if not sized:
        known = ", ".join(PROFILES)
        raise ValueError(
            f"unknown accelerator model {model!r}: use one of {known}, "
            f"or any name ending in its memory size like 'RTX6000-48GB'"
        )
    gb = int(sized.group(2))
    if not 1 <= gb <= 4096:
        raise ValueError(f"accelerator model {model!r}: memory size {gb} GB is out of range")
    return Profile(model, f"Simulated {model}", "nvidia", gb * 1024, 300, 40, 1800, 300, "8.0")
