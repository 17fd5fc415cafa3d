"""`gpupool admin queue ...`: create, change, show and delete queues: quotas (compute, per GPU
model, GPU memory) and the policy members' jobs must keep (priority, preemptible, min_runtime_s,
pending jobs)."""

from __future__ import annotations

from typing import Any

import typer
from rich.markup import escape

from controlplane.cli.admin import parse_duration
from controlplane.cli.cluster import show_queues
from controlplane.cli.context import target
from controlplane.cli.errors import CliError, console, handle_errors
from controlplane.cli.render import queues_table
from controlplane.cli.render_admin import (BadValue, is_none, parse_gpus, parse_mib, parse_pairs,
                                           parse_priority, queue_policy_table)

queue_app = typer.Typer(help="Queues: quotas and the policy for members' jobs (admins).", no_args_is_help=True)

NONE_HELP = "; 'none' removes it"
Guarantee = typer.Option(None, "--guarantee", metavar="GPUS", help="GPUs guaranteed, e.g. 4 or 0.5")
Limit = typer.Option(None, "--limit", metavar="GPUS", help="most GPUs the queue may hold" + NONE_HELP)
Weight = typer.Option(None, "--weight", help="fair-share weight (> 0)")
MaxPriority = typer.Option(None, "--max-priority", metavar="PRIORITY",
                           help="highest priority for members: low, normal, high, critical or a number" + NONE_HELP)
NonPreemptible = typer.Option(None, "--allow-non-preemptible/--no-allow-non-preemptible",
                              help="may members submit preemptible: false")
MaxMinRuntime = typer.Option(None, "--max-min-runtime", metavar="DURATION",
                             help="longest min_runtime_s for members, e.g. 1h" + NONE_HELP)
MaxPending = typer.Option(None, "--max-pending", metavar="N",
                          help="pending jobs the queue may hold" + NONE_HELP + " (the server's default cap applies)")
ModelGuarantee = typer.Option(None, "--model-guarantee", metavar="MODEL=GPUS",
                              help="GPUs guaranteed on one model, e.g. H100-80GB=4 (repeat for more; "
                                   "replaces the queue's per-model guarantees)")
NoModelGuarantees = typer.Option(False, "--no-model-guarantees", help="remove every per-model guarantee")
MemoryGuarantee = typer.Option(None, "--memory-guarantee", metavar="SIZE",
                               help="GPU memory guaranteed, e.g. 160GiB" + NONE_HELP)
MemoryLimit = typer.Option(None, "--memory-limit", metavar="SIZE",
                           help="most GPU memory the queue may hold, e.g. 640GiB" + NONE_HELP)
Team = typer.Option(None, "--team", "-t", help="the queue's team (needed when the name is in several)")


def quota_fields(*, guarantee: str | None = None, limit: str | None = None, weight: float | None = None,
                 max_priority: str | None = None, allow_non_preemptible: bool | None = None,
                 max_min_runtime: str | None = None, max_pending: str | None = None,
                 model_guarantee: list[str] | None = None, no_model_guarantees: bool = False,
                 memory_guarantee: str | None = None, memory_limit: str | None = None) -> dict[str, Any]:
    """The API fields the given options set (a value of 'none' sends null)."""
    def opt(raw: str | None, field: str, parse) -> None:  # noqa: ANN001
        if raw is not None:
            fields[field] = None if is_none(raw) else parse(raw)

    fields: dict[str, Any] = {}
    try:
        opt(guarantee, "guarantee_milli", lambda v: parse_gpus(v, "--guarantee"))
        opt(limit, "limit_milli", lambda v: parse_gpus(v, "--limit"))
        opt(max_priority, "max_priority", lambda v: parse_priority(v, "--max-priority"))
        opt(max_min_runtime, "max_min_runtime_s", lambda v: parse_duration(v, "--max-min-runtime"))
        opt(max_pending, "max_pending_jobs", lambda v: _count(v, "--max-pending"))
        opt(memory_guarantee, "memory_guarantee_mib", lambda v: parse_mib(v, "--memory-guarantee"))
        opt(memory_limit, "memory_limit_mib", lambda v: parse_mib(v, "--memory-limit"))
        if model_guarantee:
            fields["model_guarantees_milli"] = parse_pairs(model_guarantee, "--model-guarantee", parse_gpus)
    except BadValue as err:
        raise CliError(str(err)) from None
    if no_model_guarantees:
        fields["model_guarantees_milli"] = None
    if weight is not None:
        fields["weight"] = weight
    if allow_non_preemptible is not None:
        fields["allow_non_preemptible"] = allow_non_preemptible
    if fields.get("guarantee_milli", 0) is None:
        raise CliError("--guarantee cannot be none; use 0")
    return fields


def _count(text: str, option: str) -> int:
    if not text.strip().isdigit():
        raise BadValue(f"{option} {text!r}: use a whole number or none")
    return int(text)


@queue_app.command("list")
@handle_errors
def list_queues(ctx: typer.Context) -> None:
    """Every queue: use and quota, then each queue's policy."""
    show_queues(ctx, policies=True)


@queue_app.command("create")
@handle_errors
def create(ctx: typer.Context, name: str, team: str = typer.Option(..., "--team", "-t", help="the queue's team"),
           guarantee: str = Guarantee, limit: str = Limit, weight: float = Weight, max_priority: str = MaxPriority,
           allow_non_preemptible: bool = NonPreemptible, max_min_runtime: str = MaxMinRuntime,
           max_pending: str = MaxPending, model_guarantee: list[str] = ModelGuarantee,
           memory_guarantee: str = MemoryGuarantee, memory_limit: str = MemoryLimit) -> None:
    """Create a queue in a team."""
    fields = quota_fields(guarantee=guarantee, limit=limit, weight=weight, max_priority=max_priority,
                          allow_non_preemptible=allow_non_preemptible, max_min_runtime=max_min_runtime,
                          max_pending=max_pending, model_guarantee=model_guarantee,
                          memory_guarantee=memory_guarantee, memory_limit=memory_limit)
    with target(ctx).client() as client:
        q = client.create_queue(name, team, **fields)
    console.print(f"created queue {escape(q.team)}/{escape(q.name)}")
    console.print(queue_policy_table([q]))


@queue_app.command("set")
@handle_errors
def set_queue(ctx: typer.Context, name: str, team: str = Team, guarantee: str = Guarantee, limit: str = Limit,
              weight: float = Weight, max_priority: str = MaxPriority, allow_non_preemptible: bool = NonPreemptible,
              max_min_runtime: str = MaxMinRuntime, max_pending: str = MaxPending,
              model_guarantee: list[str] = ModelGuarantee, no_model_guarantees: bool = NoModelGuarantees,
              memory_guarantee: str = MemoryGuarantee, memory_limit: str = MemoryLimit) -> None:
    """Change a queue's quotas or policy; options left out keep their value."""
    fields = quota_fields(guarantee=guarantee, limit=limit, weight=weight, max_priority=max_priority,
                          allow_non_preemptible=allow_non_preemptible, max_min_runtime=max_min_runtime,
                          max_pending=max_pending, model_guarantee=model_guarantee,
                          no_model_guarantees=no_model_guarantees, memory_guarantee=memory_guarantee,
                          memory_limit=memory_limit)
    if not fields:
        raise CliError("nothing to change: pass at least one option (see --help)")
    with target(ctx).client() as client:
        q = client.update_queue(name, team=team, **fields)
    console.print(f"updated queue {escape(q.team)}/{escape(q.name)}")
    console.print(queue_policy_table([q]))


@queue_app.command("show")
@handle_errors
def show(ctx: typer.Context, name: str, team: str = Team) -> None:
    """One queue's use, quotas and policy."""
    with target(ctx).client() as client:
        items = [q for q in client.list_queues().items if q.name == name and (team is None or q.team == team)]
    if not items:
        raise CliError(f"no queue named {name!r}" + (f" in team {team!r}" if team else ""))
    console.print(queues_table(items))
    console.print(queue_policy_table(items))


@queue_app.command("delete")
@handle_errors
def delete(ctx: typer.Context, name: str, team: str = Team) -> None:
    """Delete a queue that never held a job."""
    with target(ctx).client() as client:
        q = client.delete_queue(name, team=team)
    console.print(f"deleted queue {escape(q.team)}/{escape(q.name)}")
