"""What a submit must satisfy beyond the spec's own validation: the queue's policy for members
(highest priority, non-preemptible jobs, longest min_runtime_s), its cap on pending jobs, and
specs that can start at all (no NUL bytes in argv or env)."""

from __future__ import annotations

from dataclasses import dataclass

from controlplane.services.errors import Invalid, TooManyRequests


@dataclass(frozen=True, slots=True)
class QueuePolicy:
    """A queue's rules for members' jobs (admins may exceed them); None: no limit."""

    name: str
    max_priority: int | None = None
    allow_non_preemptible: bool = True
    max_min_runtime_s: float | None = None
    max_pending_jobs: int | None = None


def check_startable(spec: dict) -> None:
    """Refuse what could never be exec'd: NUL anywhere in argv or env, '=' in an env name."""
    for i, arg in enumerate(spec.get("command") or []):
        if "\x00" in arg:
            raise Invalid(f"command.{i}", "contains a NUL byte, which no process argument can hold")
    for key, value in (spec.get("env") or {}).items():
        if not key or "\x00" in key or "=" in key:
            raise Invalid(f"env.{key!r}", "an environment name must be non-empty, without '=' or NUL")
        if "\x00" in value:
            raise Invalid(f"env.{key}", "contains a NUL byte, which no environment value can hold")


def check_policy(policy: QueuePolicy, spec: dict, priority: int) -> None:
    """A member's job within its queue's policy, or a 422 naming the field and the policy."""
    if policy.max_priority is not None and priority > policy.max_priority:
        raise Invalid("priority", f"queue {policy.name} allows priority up to {policy.max_priority} "
                                  f"for members; got {priority}")
    if not policy.allow_non_preemptible and spec.get("preemptible") is False:
        raise Invalid("preemptible", f"queue {policy.name} does not allow non-preemptible jobs for members")
    runtime = float(spec.get("min_runtime_s") or 0)
    if policy.max_min_runtime_s is not None and runtime > policy.max_min_runtime_s:
        raise Invalid("min_runtime_s", f"queue {policy.name} allows min_runtime_s up to "
                                       f"{policy.max_min_runtime_s:g} s for members; got {runtime:g}")


def check_pending_cap(policy: QueuePolicy, pending: int, default_cap: int) -> None:
    """Refuse a submit to a queue already holding its cap of pending jobs (429: retry later)."""
    cap = policy.max_pending_jobs if policy.max_pending_jobs is not None else default_cap
    if pending >= cap:
        raise TooManyRequests(f"queue {policy.name} already has {pending} pending jobs (its cap is {cap}); "
                              "wait for some to start or be cancelled", retry_after_s=30.0)
