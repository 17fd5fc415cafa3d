"""vLLM's Prometheus metrics -> serving figures as progress lines, under stable keys.

Keys (each line carries the ones vLLM has data for):
- ``tokens_per_s``: output tokens per second over the last interval
- ``ttft_ms`` / ``ttft_ms_avg``: time to first token, last interval / since start
- ``e2e_latency_ms`` / ``e2e_latency_ms_avg``: request latency, last interval / since start
- ``ms_per_output_token`` / ``ms_per_output_token_avg``: inter-token latency, last interval / since start
- ``kv_cache_usage``: fraction of the KV cache in use (0..1)
- ``generation_tokens``, ``prompt_tokens``, ``requests_finished``: totals since start
- ``requests_running``, ``requests_waiting``: now
"""

from __future__ import annotations

import re
from typing import Any

_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+([-+0-9.eEinfa]+)$")
GEN_TOKENS = "vllm:generation_tokens_total"
PROMPT_TOKENS = "vllm:prompt_tokens_total"
FINISHED = "vllm:request_success_total"
RUNNING = "vllm:num_requests_running"
WAITING = "vllm:num_requests_waiting"
KV_USAGE = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")  # newer, older vLLM
# histograms (seconds) -> our key; the first name vLLM exports wins
HISTOGRAMS = {
    "ms_per_output_token": ("vllm:inter_token_latency_seconds", "vllm:time_per_output_token_seconds"),
    "ttft_ms": ("vllm:time_to_first_token_seconds",),
    "e2e_latency_ms": ("vllm:e2e_request_latency_seconds",),
}


def parse_prometheus(text: str) -> dict[str, float]:
    """Sum every sample of each metric name over its labels (one engine or many)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _LINE.match(line.strip())
        if not m:
            continue
        try:
            value = float(m.group(3))
        except ValueError:
            continue
        out[m.group(1)] = out.get(m.group(1), 0.0) + value
    return out


def _histogram(sample: dict[str, float], names: tuple[str, ...]) -> tuple[float, float]:
    """(sum, count) of the first of ``names`` present in ``sample``."""
    for name in names:
        if f"{name}_count" in sample:
            return sample.get(f"{name}_sum", 0.0), sample[f"{name}_count"]
    return 0.0, 0.0


class ServingMeter:
    """Turns successive scrapes into rates and latencies over the last interval and since start."""

    def __init__(self, started_at: float | None = None) -> None:
        # with the time the server came up (every counter at zero then), the first scrape has rates too
        self.prev: tuple[float, dict[str, float]] | None = None if started_at is None else (started_at, {})

    def update(self, ts: float, sample: dict[str, float]) -> dict[str, Any]:
        figures: dict[str, Any] = {
            "generation_tokens": sample.get(GEN_TOKENS, 0.0),
            "prompt_tokens": sample.get(PROMPT_TOKENS, 0.0),
            "requests_finished": sample.get(FINISHED, 0.0),
            "requests_running": sample.get(RUNNING, 0.0),
            "requests_waiting": sample.get(WAITING, 0.0),
        }
        kv = next((sample[k] for k in KV_USAGE if k in sample), None)
        if kv is not None:
            figures["kv_cache_usage"] = kv
        for key, names in HISTOGRAMS.items():
            total, count = _histogram(sample, names)
            if count:
                figures[f"{key}_avg"] = 1000.0 * total / count
            if self.prev is not None:
                p_total, p_count = _histogram(self.prev[1], names)
                if count > p_count:
                    figures[key] = 1000.0 * (total - p_total) / (count - p_count)
        if self.prev is not None:
            pts, prev = self.prev
            figures["tokens_per_s"] = (figures["generation_tokens"] - prev.get(GEN_TOKENS, 0.0)) / max(ts - pts, 1e-9)
        self.prev = (ts, sample)
        return figures
