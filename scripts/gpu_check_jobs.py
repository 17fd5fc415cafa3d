"""Plumbing for scripts/gpu-check-agent.sh: pydantic from bundled wheels.

The GPU test machine has torch but no pydantic, which the agent's wire types need; the wheels in
scripts/gpu-check-wheels (pydantic and pydantic-core for CPython 3.12 on x86_64 Linux, plus
their pure-Python dependencies) are unpacked into the check's work dir and put on sys.path.
The slice jobs themselves run through the agent's runtime (scripts/gpu_check_runtime.py).
"""

from __future__ import annotations

import platform
import sys
import zipfile
from pathlib import Path

WHEELS = Path(__file__).resolve().parent / "gpu-check-wheels"


def ensure_pydantic(target: Path) -> str:
    """Import pydantic, unpacking the bundled wheels first if it is not installed."""
    try:
        import pydantic

        return f"installed {pydantic.VERSION}"
    except ImportError:
        pass
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    wheels = [w for w in WHEELS.glob("*.whl") if "-py3-none-any" in w.name or f"-{tag}-{tag}-" in w.name]
    if not any(w.name.startswith("pydantic_core-") for w in wheels) or platform.machine() != "x86_64":
        raise SystemExit(
            f"error: pydantic is not installed and {WHEELS} holds no pydantic-core wheel for {tag} on "
            f"{platform.machine()}; install pydantic, or add that wheel (pip download pydantic-core "
            f"--only-binary=:all: --python-version {sys.version_info.major}.{sys.version_info.minor} -d {WHEELS})"
        )
    target.mkdir(parents=True, exist_ok=True)
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as zf:
            zf.extractall(target)
    sys.path.insert(0, str(target))
    import pydantic

    return f"bundled wheel {pydantic.VERSION} unpacked in {target}"
