"""`gpupool` command line: talks to the control plane only through controlplane.client."""

from __future__ import annotations

import typer

from controlplane.cli import admin, admin_controls, bench, cluster, jobs, local, usage, whatif

app = typer.Typer(
    name="gpupool",
    help="GPU pooling and scheduling: submit jobs, watch the pool, run a server or an agent.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


@app.callback()
def _root(
    ctx: typer.Context,
    server: str = typer.Option(None, "--server", envvar="GPUPOOL_SERVER",
                               help="control plane URL (default: config file, then 127.0.0.1:8080)"),
    token: str = typer.Option(None, "--token", envvar="GPUPOOL_TOKEN", help="API token"),
    ca_bundle: str = typer.Option(None, "--ca-bundle", envvar="GPUPOOL_CA_BUNDLE",
                                  help="PEM certificates to trust for an https server"),
) -> None:
    ctx.obj = {"server": server, "token": token, "ca_bundle": ca_bundle}


jobs.register(app)
cluster.register(app)
admin.register(app)
app.add_typer(admin_controls.admin_app, name="admin")
local.register(app)
whatif.register(app)
usage.register(app)

app.add_typer(bench.app, name="bench")

if __name__ == "__main__":
    app()
