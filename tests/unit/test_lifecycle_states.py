"""The job lifecycle, table by table: every transition (allowed or not) and every attempt outcome."""

from __future__ import annotations

import itertools

import pytest

from controlplane.core.states import (ALLOWED_TRANSITIONS, FINAL_STATES, JobState, OutcomeCode,
                                      RetryPolicy, StopKind, can_transition, outcome)

P, S, R = JobState.PENDING, JobState.SCHEDULED, JobState.RUNNING
OK, FAIL, CANCEL = JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED

# every move a job may make; anything else is refused
LEGAL = {
    (P, S), (P, CANCEL),
    (S, R), (S, P), (S, OK), (S, FAIL), (S, CANCEL),
    (R, P), (R, OK), (R, FAIL), (R, CANCEL),
}


@pytest.mark.parametrize(("src", "dst"), list(itertools.product(JobState, JobState)))
def test_every_transition(src: JobState, dst: JobState) -> None:
    assert can_transition(src, dst) is ((src, dst) in LEGAL)


def test_final_states_are_final_and_every_state_has_a_row() -> None:
    assert set(ALLOWED_TRANSITIONS) == set(JobState)
    assert all(not ALLOWED_TRANSITIONS[s] for s in FINAL_STATES)


DEFAULT = RetryPolicy()  # 3 attempts, requeue on lost and preemption, not on failure
NO_RETRY = RetryPolicy(max_attempts=1, on_lost=False, on_failure=False, on_preemption=False)
RETRY_FAILURES = RetryPolicy(max_attempts=3, on_failure=True)

# (stop kind, stop reason, member exit codes, first failure code, retry, attempt)
#   -> (state, code, words in the reason, exit code)
OUTCOMES = [
    (None, None, [0, 0], None, DEFAULT, 1, (OK, OutcomeCode.SUCCEEDED, "all ranks exited 0", 0)),
    (None, None, [0, 3], None, DEFAULT, 1, (FAIL, OutcomeCode.EXIT_NONZERO, "code 3", 3)),
    (StopKind.FAILURE, "rank 1 exited with code 2", [-15, 2], 2, DEFAULT, 1,
     (FAIL, OutcomeCode.EXIT_NONZERO, "rank 1 exited with code 2", 2)),
    (StopKind.FAILURE, "boom", [1], 1, RETRY_FAILURES, 1, (P, OutcomeCode.FAILURE_RETRIED, "failed: boom", None)),
    (StopKind.FAILURE, "boom", [1], 1, RETRY_FAILURES, 3, (FAIL, OutcomeCode.EXIT_NONZERO, "boom", 1)),
    (StopKind.FAILURE, "failed to start: no such command", [None], None, DEFAULT, 1,
     (FAIL, OutcomeCode.EXIT_NONZERO, "failed to start", None)),
    (StopKind.CANCEL, "cancelled by user:alice", [-15], None, DEFAULT, 1,
     (CANCEL, OutcomeCode.CANCELLED, "cancelled by user:alice", None)),
    (StopKind.CANCEL, None, [None], None, DEFAULT, 1, (CANCEL, OutcomeCode.CANCELLED, "cancelled", None)),
    (StopKind.PREEMPT, "reclaimed by team-a", [-15], None, DEFAULT, 3,
     (P, OutcomeCode.PREEMPTED, "preempted: reclaimed by team-a", None)),
    (StopKind.PREEMPT, "reclaimed", [-15], None, NO_RETRY, 1,
     (FAIL, OutcomeCode.PREEMPTED, "retry.on_preemption is false", None)),
    (StopKind.LOST, "node n1 stopped heartbeating", [None], None, DEFAULT, 1,
     (P, OutcomeCode.LOST, "lost: node n1", None)),
    (StopKind.LOST, "node n1 stopped heartbeating", [None], None, DEFAULT, 3,
     (FAIL, OutcomeCode.LOST, "lost after 3 attempt(s)", None)),
    (StopKind.LOST, "gone", [None], None, NO_RETRY, 1, (FAIL, OutcomeCode.LOST, "lost after 1", None)),
    (StopKind.TIMEOUT, "ran longer than its max_runtime_s of 60 s", [-15], None, RETRY_FAILURES, 1,
     (FAIL, OutcomeCode.TIMED_OUT, "max_runtime_s of 60 s", None)),
]


@pytest.mark.parametrize(("kind", "reason", "codes", "first", "retry", "attempt", "expected"), OUTCOMES)
def test_outcome(kind, reason, codes, first, retry, attempt, expected) -> None:  # noqa: ANN001
    state, code, words, exit_code = expected
    result = outcome(kind, reason, codes, first, retry, attempt)
    assert (result.state, result.code, result.exit_code) == (state, code, exit_code)
    assert words in result.reason
    assert can_transition(S, result.state) and can_transition(R, result.state)


def test_retry_policy_reads_the_spec_block() -> None:
    assert RetryPolicy.from_spec(None) == DEFAULT
    assert RetryPolicy.from_spec({"max_attempts": 5, "on_failure": True}) == RetryPolicy(5, True, True, True)
