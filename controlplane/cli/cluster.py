"""Pool views: nodes, capacity, queues."""

from __future__ import annotations

import typer

from controlplane.cli.context import target
from controlplane.cli.errors import console, handle_errors
from controlplane.cli.render import capacity_table, nodes_table, queues_table
from controlplane.cli.render_admin import queue_policy_table


def register(app: typer.Typer) -> None:
    app.command("nodes")(nodes)
    app.command("capacity")(capacity)
    app.command("queues")(queues)


@handle_errors
def nodes(ctx: typer.Context) -> None:
    """Nodes, their GPUs and what is allocated on them."""
    with target(ctx).client() as client:
        items = client.list_nodes().items
    if not items:
        console.print("no nodes registered (start an agent: gpupool agent --server URL --token T)")
        return
    console.print(nodes_table(items))


@handle_errors
def capacity(ctx: typer.Context) -> None:
    """Pool capacity by vendor and model: allocated, in use, free."""
    with target(ctx).client() as client:
        cap = client.capacity()
    console.print(capacity_table(cap))


@handle_errors
def queues(ctx: typer.Context) -> None:
    """Queues with their quota (guarantee, limit), use and waiting jobs."""
    show_queues(ctx)


def show_queues(ctx: typer.Context, policies: bool = False) -> None:
    """Print the queues table (and, for admins, each queue's policy)."""
    with target(ctx).client() as client:
        items = client.list_queues().items
    if not items:
        console.print("no queues")
        return
    console.print(queues_table(items))
    if policies:
        console.print(queue_policy_table(items))
