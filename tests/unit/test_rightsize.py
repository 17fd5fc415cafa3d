"""Right-sizing rule (controlplane/core/rightsize.py, docs/usage.md): table-driven cases and a
recorded pod of the Alibaba GenAI 2026 trace giving the documented result."""

from __future__ import annotations

import pytest

from controlplane.core.rightsize import BucketUse, Recommendation, basis_of, percentile, recommend
from tests.support.genai_series import pod_series

H100 = 81559


def test_percentile_is_nearest_rank_and_weighted() -> None:
    assert percentile([5, 1, 3, 2, 4], 95) == 5
    assert percentile(list(range(1, 101)), 95) == 95
    assert percentile([10, 20], 50) == 10
    assert percentile([10, 20], 50, [1, 3]) == 20  # 20 holds three quarters of the weight
    with pytest.raises(ValueError):
        percentile([], 95)


@pytest.mark.parametrize(("p95", "peak", "device", "expected"), [
    (26.4, 37098.25, H100, Recommendation(350, 40960)),  # 316.8 milli -> 350; 40808 MiB -> 40 GiB
    (0.0, 0.0, H100, Recommendation(50, 1024)),  # floors: 50 milli, 1 GiB
    (25.0, 1024.0, H100, Recommendation(300, 2048)),  # exactly on a step stays there
    (90.0, 80000.0, H100, Recommendation(1000, H100)),  # capped at the whole device
    (None, 9000.0, H100, Recommendation(None, 10240)),  # no utilisation: compute not recommended
])
def test_recommend(p95, peak, device, expected) -> None:  # noqa: ANN001
    assert recommend(p95, peak, device) == expected


def test_basis_takes_the_busiest_accelerator_and_the_peak() -> None:
    rows = ([BucketUse("a", 1, u, 100.0) for u in (10, 20, 30)]
            + [BucketUse("b", 1, u, 900.0) for u in (50, 60)] + [BucketUse("b", 1, None, 50.0)])
    basis = basis_of(rows)
    assert (basis.util_p95_pct, basis.memory_peak_mib, basis.minutes) == (60, 900.0, 3)
    hourly = basis_of([BucketUse("a", 60, 40.0, 10.0), BucketUse("a", 1, 99.0, 10.0)])
    assert (hourly.util_p95_pct, hourly.minutes) == (40.0, 61)  # an hour weighs 60 minutes
    assert basis_of([]).util_p95_pct is None


def test_recorded_genai_pod_gives_the_documented_result() -> None:
    util, mem = pod_series()
    assert (len(util), len(mem)) == (1441, 1441)
    basis = basis_of(BucketUse("gpu0", 1, u, m) for u, m in zip(util, mem))
    assert basis.util_p95_pct == pytest.approx(26.4)
    assert basis.memory_peak_mib == pytest.approx(37098.25)
    assert recommend(basis.util_p95_pct, basis.memory_peak_mib, H100) == Recommendation(350, 40960)
