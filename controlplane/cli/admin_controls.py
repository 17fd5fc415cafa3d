"""`gpupool admin ...`: queues, bootstrap tokens, users, the scheduler's policy and accelerator
health (admins)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.markup import escape

from controlplane.cli.admin import parse_duration
from controlplane.cli.admin_queues import queue_app
from controlplane.cli.context import target
from controlplane.cli.errors import CliError, console, handle_errors
from controlplane.cli.render_admin import (BadValue, bootstrap_tokens_table, parse_pairs, scheduler_view,
                                           users_table)

admin_app = typer.Typer(help="Administration: queues, bootstrap tokens, users, scheduler, GPU health.",
                        no_args_is_help=True)
bootstrap_app = typer.Typer(help="Tokens agents register new nodes with.", no_args_is_help=True)
user_app = typer.Typer(help="Users: list, disable, enable.", no_args_is_help=True)
scheduler_app = typer.Typer(help="The placement policy and plugin weights, set at run time.", no_args_is_help=True)
accelerator_app = typer.Typer(help="Accelerator health: cordon a GPU or return it to service.",
                              no_args_is_help=True)
admin_app.add_typer(queue_app, name="queue")
admin_app.add_typer(bootstrap_app, name="bootstrap-token")
admin_app.add_typer(user_app, name="user")
admin_app.add_typer(scheduler_app, name="scheduler")
admin_app.add_typer(accelerator_app, name="accelerator")


@bootstrap_app.command("create")
@handle_errors
def bootstrap_create(
    ctx: typer.Context,
    expires_in: str = typer.Option("1d", "--expires-in", metavar="DURATION",
                                   help="lifetime like 1d, 12h, 30m, or 'never'"),
    single_use: bool = typer.Option(False, "--single-use", help="the first node registered uses it up"),
    name_pattern: str = typer.Option(None, "--name-pattern", metavar="REGEX",
                                     help="node names it may register must match in full, e.g. 'gpu-[0-9]+'"),
    name: str = typer.Option("agent bootstrap", "--name", "-n", help="a label for the token"),
    quiet: bool = typer.Option(False, "--quiet", help="print only the token"),
) -> None:
    """Create a bootstrap token for `gpupool agent --token`; the secret is shown once."""
    rules: dict = {"name": name, "single_use": single_use}
    if expires_in.strip().lower() != "never":
        rules["expires_in_s"] = parse_duration(expires_in, "--expires-in")
    if name_pattern is not None:
        rules["name_pattern"] = name_pattern
    with target(ctx).client() as client:
        answer = client.create_bootstrap_token(**rules)
    if quiet:
        print(answer.token)
        return
    limits = [f"expires {answer.expires_at.isoformat()}" if answer.expires_at else "never expires"]
    if answer.single_use:
        limits.append("single use")
    if answer.name_pattern:
        limits.append(f"node names matching {answer.name_pattern!r}")
    console.print(f"bootstrap token {escape(answer.id)} ({escape(', '.join(limits))}; shown once, keep it safe):")
    print(answer.token)


@bootstrap_app.command("list")
@handle_errors
def bootstrap_list(ctx: typer.Context) -> None:
    """Every bootstrap token with its state: active, used, expired or revoked."""
    with target(ctx).client() as client:
        items = client.list_bootstrap_tokens().items
    console.print(bootstrap_tokens_table(items) if items else "no bootstrap tokens")


@bootstrap_app.command("revoke")
@handle_errors
def bootstrap_revoke(ctx: typer.Context, token_id: str) -> None:
    """Revoke a bootstrap token (nodes it registered keep their own tokens)."""
    with target(ctx).client() as client:
        client.revoke_bootstrap_token(token_id)
    console.print(f"revoked bootstrap token {escape(token_id)}")


@user_app.command("list")
@handle_errors
def user_list(ctx: typer.Context) -> None:
    with target(ctx).client() as client:
        console.print(users_table(client.list_users().items))


@user_app.command("disable")
@handle_errors
def user_disable(ctx: typer.Context, name: str) -> None:
    """Refuse the user's tokens and end their dashboard sessions (their jobs keep running)."""
    with target(ctx).client() as client:
        client.disable_user(name)
    console.print(f"disabled user {escape(name)}: their tokens are refused and their dashboard sessions ended")


@user_app.command("enable")
@handle_errors
def user_enable(ctx: typer.Context, name: str) -> None:
    with target(ctx).client() as client:
        client.enable_user(name)
    console.print(f"enabled user {escape(name)}")


@scheduler_app.command("show")
@handle_errors
def scheduler_show(ctx: typer.Context) -> None:
    """The policy the scheduling loop uses and each plugin's weight."""
    with target(ctx).client() as client:
        console.print(scheduler_view(client.get_scheduler()))


@scheduler_app.command("set")
@handle_errors
def scheduler_set(
    ctx: typer.Context,
    policy: str = typer.Argument(..., help="a policy name: gpupool, fgd, bestfit, binpack, spread, firstfit"),
    weight: list[str] = typer.Option(None, "--weight", "-w", metavar="PLUGIN=WEIGHT",
                                     help="explicit plugin weights replacing the policy's own (repeat)"),
) -> None:
    """Set the placement policy; the scheduling loop uses it from its next cycle."""
    try:
        weights = parse_pairs(weight, "--weight", _weight) if weight else None
    except BadValue as err:
        raise CliError(str(err)) from None
    with target(ctx).client() as client:
        console.print(scheduler_view(client.set_scheduler(policy, weights)))


def _weight(text: str, option: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise BadValue(f"{option} {text!r}: use a number") from None


@scheduler_app.command("dump")
@handle_errors
def scheduler_dump(
    ctx: typer.Context,
    out: Path = typer.Option(..., "--out", "-o", help="file to write the dump to (JSON)"),
) -> None:
    """Save what the scheduler would decide now, with its whole input, to replay it offline
    (`gpupool bench replay FILE`); nothing is applied."""
    with target(ctx).client() as client:
        dump = client.scheduler_dump()
    out.write_text(json.dumps(dump))
    console.print(f"wrote {escape(str(out))}: {len(dump['snapshot']['pending'])} pending job(s), "
                  f"{len(dump['snapshot']['nodes'])} node(s); replay it with `gpupool bench replay {escape(str(out))}`")


@scheduler_app.command("reset")
@handle_errors
def scheduler_reset(ctx: typer.Context) -> None:
    """Forget the run-time policy: the server's GPUPOOL_SCHEDULER_POLICY applies again."""
    with target(ctx).client() as client:
        console.print(scheduler_view(client.reset_scheduler()))


@accelerator_app.command("mark-healthy")
@handle_errors
def mark_healthy(ctx: typer.Context, uuid: str) -> None:
    """Return a cordoned accelerator to service (and its node, if its health had cordoned it)."""
    with target(ctx).client() as client:
        acc = client.mark_accelerator_healthy(uuid)
        node = client.get_node(acc.node) if acc.node else None
    tail = f"; node {node.name} is still cordoned" if node is not None and node.cordoned else ""
    console.print(f"accelerator {escape(uuid)} (GPU {acc.index} of {escape(acc.node or '?')}) "
                  f"is healthy again{escape(tail)}")


@accelerator_app.command("mark-unhealthy")
@handle_errors
def mark_unhealthy(ctx: typer.Context, uuid: str,
                   reason: str = typer.Option(None, "--reason", help="why (shown on the node and in events)")) -> None:
    """Cordon an accelerator: nothing new lands on it and its jobs are stopped and requeued."""
    with target(ctx).client() as client:
        acc = client.mark_accelerator_unhealthy(uuid, reason)
    console.print(f"accelerator {escape(uuid)} (GPU {acc.index} of {escape(acc.node or '?')}) "
                  f"is cordoned: {escape(acc.unhealthy_reason or '')}")
