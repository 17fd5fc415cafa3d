"""The root options (--server, --token, --ca-bundle) shared by every command, kept on the click context."""

from __future__ import annotations

import typer

from controlplane.cli.config import Target, resolve


def target(ctx: typer.Context) -> Target:
    """Where to send API calls, from the root options, env and config file."""
    obj = ctx.find_root().obj or {}
    return resolve(obj.get("server"), obj.get("token"), obj.get("ca_bundle"))
