"""Structured progress lines (``GPUPOOL_PROGRESS {json}``) that the agent forwards to the job.

No pydantic here: the GPU-side scripts import this without the control plane's dependencies.
"""

from __future__ import annotations

import json
import math
import sys
import time
from typing import Any, TextIO

PROGRESS_PREFIX = "GPUPOOL_PROGRESS "  # same as controlplane.core.wire.PROGRESS_PREFIX (a test keeps them equal)
_CONTEXT: dict[str, Any] = {}  # fields every line carries (the job's topology), set once at start


def set_context(**fields: Any) -> None:
    """Fields added to every later progress line (each line replaces the job's progress)."""
    _CONTEXT.clear()
    _CONTEXT.update(fields)


def emit(stream: TextIO | None = None, **fields: Any) -> str:
    """Print one progress line (with the context fields; non-finite floats dropped) and return it."""
    fields = {**_CONTEXT, **fields}
    clean = {k: (round(v, 6) if isinstance(v, float) else v) for k, v in fields.items()
             if v is not None and not (isinstance(v, float) and not math.isfinite(v))}
    line = PROGRESS_PREFIX + json.dumps(clean, sort_keys=True)
    print(line, file=stream or sys.stdout, flush=True)
    return line


def parse(line: str) -> dict[str, Any] | None:
    """The progress fields of a log line, or None when it is not a progress line."""
    line = line.strip()
    if not line.startswith(PROGRESS_PREFIX.strip()):
        return None
    try:
        data = json.loads(line[len(PROGRESS_PREFIX.strip()):].strip())
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


class Meter:
    """Tokens/s over the run so far and the ETA of the remaining steps."""

    def __init__(self, total_steps: int, start_step: int = 0, clock: Any = time.monotonic) -> None:
        self.total = total_steps
        self.start_step = start_step
        self.clock = clock
        self.t0 = clock()
        self.tokens = 0

    def add_tokens(self, n: int) -> None:
        self.tokens += n

    def figures(self, step: int) -> dict[str, float]:
        dt = max(self.clock() - self.t0, 1e-9)
        done = max(step - self.start_step, 0)
        eta = (self.total - step) * dt / done if done else None
        return {"tokens_per_s": self.tokens / dt, "eta_s": eta, "elapsed_s": dt}
