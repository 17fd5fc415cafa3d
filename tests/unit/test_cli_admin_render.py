"""The admin commands' value parsing and tables (pure: no server)."""

from __future__ import annotations

import pytest
from rich.console import Console

from controlplane.cli.render_admin import (BadValue, parse_gpus, parse_mib, parse_pairs, parse_priority,
                                           queue_policy_table, scheduler_view)
from controlplane.schemas import Queue, SchedulerSettings


@pytest.mark.parametrize(("text", "mib"), [("80GiB", 81920), ("80G", 81920), ("512MiB", 512), ("1.5TiB", 1572864),
                                           ("81920", 81920), (" 2 gib ", 2048)])
def test_sizes(text: str, mib: int) -> None:
    assert parse_mib(text, "--memory-limit") == mib


@pytest.mark.parametrize("bad", ["lots", "-1GiB", "GiB", "1PiB"])
def test_bad_sizes_name_the_option(bad: str) -> None:
    with pytest.raises(BadValue, match="--memory-limit"):
        parse_mib(bad, "--memory-limit")


def test_gpus_priorities_and_pairs() -> None:
    assert parse_gpus("1.5", "--guarantee") == 1500 and parse_gpus("0.25", "x") == 250
    assert parse_priority("high", "p") == 100 and parse_priority("-5", "p") == -5
    assert parse_pairs(["H100-80GB=4", "A100-80GB = 0.5"], "--model-guarantee", parse_gpus) == \
           {"H100-80GB": 4000, "A100-80GB": 500}
    for call in (lambda: parse_gpus("two", "--limit"), lambda: parse_priority("urgent", "--max-priority"),
                 lambda: parse_pairs(["H100"], "--model-guarantee", parse_gpus)):
        with pytest.raises(BadValue):
            call()


def _text(renderable) -> str:  # noqa: ANN001
    console = Console(width=250, record=True)
    console.print(renderable)
    return console.export_text()


def test_policy_table_and_scheduler_view() -> None:
    q = Queue(name="train", team="ml", guarantee_milli=2000, limit_milli=None, weight=1.0, allocated_milli=0,
              pending_jobs=0, running_jobs=0, max_priority=100, allow_non_preemptible=False,
              max_min_runtime_s=3600, model_guarantees_milli={"H100-80GB": 1500}, memory_limit_mib=163840)
    text = _text(queue_policy_table([q]))
    assert "ml/train" in text and "H100-80GB 1.5" in text and "160 GiB" in text and "3600 s" in text
    assert "refused" in text and "none" in text
    cfg = SchedulerSettings(policy="fgd", weights={"fgd": 900}, effective_weights={"fgd": 900}, source="admin",
                            updated_by="user:ops", updated_at="2026-01-01T00:00:00Z",
                            policies={"fgd": {"fgd": 1000}, "gpupool": {"gpupool": 1000}}, plugins=["fgd", "spread"])
    text = _text(scheduler_view(cfg))
    assert "policy fgd (explicit weights, set by user:ops" in text and "900" in text and "known policies: fgd, gpupool" in text
