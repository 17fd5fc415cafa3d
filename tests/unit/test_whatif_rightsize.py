"""Right-sizing: the documented rule on hand-made series and on a recorded GenAI pod."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from controlplane.whatif.rightsize import (
    Margin, MinuteUsage, NotEnoughUsage, basis_of, percentile, recommend,
)

RECORDED = Path(__file__).parent / "test_whatif_data" / "genai_pod_4356d741.csv"


def minutes(p95s, memory_max=5000.0, acc="0"):
    return [MinuteUsage(acc, v / 2, v, memory_max / 2, memory_max) for v in p95s]


def test_percentile_is_nearest_rank():
    assert percentile(list(range(1, 21)), 95) == 19  # ceil(0.95 * 20) = 19th value
    assert percentile([5.0], 95) == 5.0
    assert percentile(list(range(1, 101)), 95) == 95


def test_hand_made_series_gives_the_worked_out_slice():
    # p95 over 20 minutes of 1..20 % is 19 %; +20 % = 22.8 % -> 228 milli -> 250 (50-milli step)
    # peak 5000 MiB; +10 % = 5500 MiB -> 6144 (1-GiB step)
    rec = recommend(minutes(range(1, 21)))
    assert (rec.gpu_milli, rec.gpu_memory_mib) == (250, 6144)
    assert rec.basis.compute_p95_pct == 19 and rec.basis.memory_peak_mib == 5000
    assert "250 milli" in rec.explanation and "6 GiB" in rec.explanation


def test_busiest_accelerator_sets_the_slice_and_memory_caps_at_the_card():
    series = minutes([10.0] * 12, 1000.0, "a") + minutes([40.0] * 12, 30000.0, "b")
    rec = recommend(series, accelerator_memory_mib=32768)
    assert rec.gpu_milli == 500  # 40 % * 1.2 = 48 % -> 480 -> 500
    assert rec.gpu_memory_mib == 32768  # 33000 MiB -> 33792, capped at the card
    assert rec.accelerators == 2


def test_idle_job_still_gets_the_smallest_steps_and_busy_job_a_whole_gpu():
    assert (recommend(minutes([0.0] * 10, 0.0)).gpu_milli,
            recommend(minutes([0.0] * 10, 0.0)).gpu_memory_mib) == (50, 1024)
    assert recommend(minutes([95.0] * 10)).gpu_milli == 1000


def test_too_little_or_bad_usage_is_a_clear_error():
    with pytest.raises(NotEnoughUsage, match="3 minute.* at least 10"):
        recommend(minutes([5.0] * 3))
    with pytest.raises(NotEnoughUsage, match="no usage samples"):
        recommend([])
    with pytest.raises(ValueError, match="compute_p95_pct must be a number >= 0"):
        basis_of([MinuteUsage("gpu0", 1.0, -2.0, 1.0, 1.0)])
    assert recommend(minutes([5.0] * 3), Margin(min_minutes=3)).gpu_milli == 100  # 6 % -> 100


def test_recorded_genai_pod_gives_the_documented_recommendation():
    """docs/utilisation.md: pod 4356d741 of the GenAI 2026 trace, 1,441 minutes on one GPU:
    p95 compute 27.0 %, peak memory 37.0 GiB -> 350 milli and 41 GiB."""
    with RECORDED.open() as fh:
        series = [MinuteUsage("0", float(r["duty_cycle_pct"]), float(r["duty_cycle_pct"]),
                              float(r["memory_used_bytes"]) / 2**20,
                              float(r["memory_used_bytes"]) / 2**20) for r in csv.DictReader(fh)]
    rec = recommend(series)
    assert rec.basis.minutes == 1441
    assert rec.basis.compute_p95_pct == pytest.approx(27.0)
    assert rec.basis.memory_peak_mib == pytest.approx(37879.18, abs=0.01)
    assert rec.basis.compute_mean_pct == pytest.approx(5.93, abs=0.01)
    assert (rec.gpu_milli, rec.gpu_memory_mib) == (350, 41 * 1024)
