"""vLLM's Prometheus metrics -> serving figures (tokens/s, ms per output token) as progress lines."""

from __future__ import annotations

import re
from typing import Any

_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+([-+0-9.eEinfa]+)$")
GEN_TOKENS = "vllm:generation_tokens_total"
PROMPT_TOKENS = "vllm:prompt_tokens_total"
RUNNING = "vllm:num_requests_running"
WAITING = "vllm:num_requests_waiting"
# newer vLLM calls the per-output-token time "inter_token_latency"; older "time_per_output_token"
TPOT = ("vllm:inter_token_latency_seconds", "vllm:time_per_output_token_seconds")


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


class ServingMeter:
    """Turns successive scrapes into rates over the last interval and since start."""

    def __init__(self) -> None:
        self.prev: tuple[float, dict[str, float]] | None = None

    def update(self, ts: float, sample: dict[str, float]) -> dict[str, Any]:
        figures: dict[str, Any] = {
            "generation_tokens": sample.get(GEN_TOKENS, 0.0),
            "prompt_tokens": sample.get(PROMPT_TOKENS, 0.0),
            "requests_running": sample.get(RUNNING, 0.0),
            "requests_waiting": sample.get(WAITING, 0.0),
        }
        tpot_sum = tpot_count = 0.0
        for name in TPOT:
            if f"{name}_count" in sample:
                tpot_sum, tpot_count = sample[f"{name}_sum"], sample[f"{name}_count"]
                break
        if tpot_count:
            figures["ms_per_output_token_avg"] = 1000.0 * tpot_sum / tpot_count
        if self.prev is not None:
            pts, prev = self.prev
            dt = max(ts - pts, 1e-9)
            figures["tokens_per_s"] = (figures["generation_tokens"] - prev.get(GEN_TOKENS, 0.0)) / dt
            d_count = tpot_count - _tpot(prev)[1]
            if d_count > 0:
                figures["ms_per_output_token"] = 1000.0 * (tpot_sum - _tpot(prev)[0]) / d_count
        self.prev = (ts, sample)
        return figures


def _tpot(sample: dict[str, float]) -> tuple[float, float]:
    for name in TPOT:
        if f"{name}_count" in sample:
            return sample[f"{name}_sum"], sample[f"{name}_count"]
    return 0.0, 0.0
