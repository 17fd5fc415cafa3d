"""Memory watchdog: over the limit past the grace period -> one violation with the reason."""

import pytest

from agent.enforce.watchdog import MemoryWatchdog


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_flags_only_after_grace_and_once():
    clock = Clock()
    wd = MemoryWatchdog(grace_s=2.0, clock=clock)
    limits = {("a", "g0"): 1000.0, ("b", "g0"): 1000.0}
    assert wd.check({("a", "g0"): 1500.0, ("b", "g0"): 900.0}, limits) == []
    clock.t = 1.9
    assert wd.check({("a", "g0"): 1500.0, ("b", "g0"): 900.0}, limits) == []
    clock.t = 2.0
    (v,) = wd.check({("a", "g0"): 1600.0, ("b", "g0"): 900.0}, limits)
    assert v.attempt_id == "a" and v.reason == "slice memory exceeded: used 1600 MiB > limit 1000 MiB"
    clock.t = 5.0
    assert wd.check({("a", "g0"): 1600.0}, limits) == []  # reported once


def test_dipping_below_resets_the_grace():
    clock = Clock()
    wd = MemoryWatchdog(grace_s=1.0, clock=clock)
    limits = {("a", "g0"): 100.0}
    wd.check({("a", "g0"): 200.0}, limits)
    clock.t = 0.8
    wd.check({("a", "g0"): 50.0}, limits)
    clock.t = 1.5
    assert wd.check({("a", "g0"): 200.0}, limits) == []
    clock.t = 2.5
    assert len(wd.check({("a", "g0"): 200.0}, limits)) == 1
    wd.forget("a")
    clock.t = 3.0
    assert wd.check({("a", "g0"): 200.0}, limits) == []  # forgotten: a fresh grace starts


def test_bad_grace_is_refused():
    with pytest.raises(ValueError, match="grace"):
        MemoryWatchdog(grace_s=-1)
