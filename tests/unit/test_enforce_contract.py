"""The GPU memory contract: framework cap < MPS pinned limit <= watchdog limit = slice, with headroom.

Checked for torch, vLLM and MPS settings on 25 %, 50 % and 100 % slices of an 80 GB GPU, with the
margin derived from the H100 recordings (context, per-process overhead, driver reserve).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.nvml_replay import FIXTURES
from agent.enforce.contract import OVERHEADS, derive_overhead, memory_contract

H100 = 81559  # NVML's total for the recorded H100 80GB HBM3, MiB
CONTEXT = 518  # recorded: CUDA context with 0 bytes allocated by PyTorch


@pytest.mark.skipif(not (FIXTURES / "sharing-mps-and-caps.log").exists(), reason="no H100 recordings")
def test_margin_is_what_the_recordings_show():
    derived = derive_overhead(Path(FIXTURES))
    h100 = OVERHEADS["H100-80GB"]
    assert (derived["context_mib"], derived["workspace_mib"], derived["reserved_mib"]) == (
        h100.context_mib, h100.workspace_mib, h100.reserved_mib) == (518, 196, 480)
    assert derived["per_process_mib"] == 714  # NVML per process minus its 6 / 10 GiB ballast


@pytest.mark.parametrize("share", [0.25, 0.5, 1.0])
@pytest.mark.parametrize("collective", [False, True])
def test_limits_nest_with_headroom(share, collective):
    slice_mib = int(H100 * share)
    c = memory_contract(slice_mib, H100, "H100-80GB", collective=collective)
    assert c.watchdog_mib == slice_mib and c.mps_pinned_mib <= c.watchdog_mib
    assert c.framework_cap_mib < c.mps_pinned_mib
    # torch: its allocator may hold fraction x its total (= device minus the driver's reserve);
    # at that cap, plus the CUDA context/workspace (and NCCL), the process still fits the slice
    torch_total = H100 - 480
    assert c.torch_fraction * torch_total + c.margin_mib <= min(slice_mib, torch_total)
    assert c.margin_mib == 714 + (560 if collective else 0)


@pytest.mark.parametrize("share", [0.25, 0.5, 1.0])
def test_vllm_starts_on_an_mps_slice_and_stays_inside(share):
    slice_mib = int(H100 * share)
    c = memory_contract(slice_mib, H100, "H100-80GB")
    total = H100 - 480  # what torch.cuda.mem_get_info reports as total, under MPS too (recorded)
    # under MPS free = pinned limit - this client's context (recorded: 2 GiB pinned -> 1.5 GiB free)
    free_under_mps = min(c.mps_pinned_mib, total) - CONTEXT
    requested = c.vllm_utilization * total  # vLLM refuses to start unless this much is free
    assert requested <= free_under_mps
    assert CONTEXT + requested <= c.mps_pinned_mib  # its peak: context + its whole budget
    # and it is not needlessly small: within the margin plus rounding of the slice
    assert requested >= min(slice_mib, total) - c.margin_mib - 0.001 * total


@pytest.mark.parametrize("share,fraction,utilization", [(0.25, "0.2426", "0.242"), (0.5, "0.4941", "0.494"),
                                                         (1.0, "0.9911", "0.991")])
def test_figures_jobs_get(share, fraction, utilization):
    c = memory_contract(int(H100 * share), H100, "H100-80GB")
    assert (f"{c.torch_fraction:.4f}", f"{c.vllm_utilization:.3f}") == (fraction, utilization)
    assert c.recorded and "(recorded)" in c.describe()


def test_unrecorded_model_borrows_the_h100_margin_and_says_so():
    c = memory_contract(20480, 81920, "A100-80GB")
    assert not c.recorded and c.margin_mib == 714
    assert "assumed from the H100-80GB recording" in c.describe()


def test_slice_smaller_than_the_margin_is_flagged():
    c = memory_contract(512, H100, "H100-80GB")
    assert not c.fits and c.framework_cap_mib == 0 and "CUDA will not fit" in c.describe()
