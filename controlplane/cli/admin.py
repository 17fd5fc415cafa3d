"""Admin commands: `token create`, `db upgrade`."""

from __future__ import annotations

import typer
from rich.markup import escape

from controlplane.cli.context import target
from controlplane.cli.errors import CliError, console, handle_errors

token_app = typer.Typer(help="API tokens (admins).", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(token_app, name="token")
    app.add_typer(db_app, name="db")


@token_app.command("create")
@handle_errors
def token_create(
    ctx: typer.Context,
    user: str = typer.Option(None, "--user", "-u", help="whose token (default: you)"),
    name: str = typer.Option("cli", "--name", "-n", help="a label for the token"),
    quiet: bool = typer.Option(False, "--quiet", help="print only the token"),
) -> None:
    """Create an API token; the secret is shown once."""
    with target(ctx).client() as client:
        if not user:
            user = client.whoami().user
            if not user:
                raise CliError("this token belongs to no user; pass --user")
        answer = client.create_token(user, name)
    if quiet:
        print(answer.token)
        return
    console.print(f"token {escape(answer.id)} for user {escape(answer.user)} (shown once, keep it safe):")
    print(answer.token)


@db_app.command("upgrade")
@handle_errors
def db_upgrade(
    database_url: str = typer.Option(None, "--database-url", envvar="GPUPOOL_DATABASE_URL",
                                     help="default: SQLite under GPUPOOL_HOME"),
) -> None:
    """Create or migrate the database schema to the latest revision."""
    try:
        from controlplane.db.migrate import upgrade
    except ImportError as e:
        raise CliError(f"this build has no database migrations ({e})") from None
    url = database_url or _default_database_url()
    try:
        upgrade(url)
    except Exception as e:  # a broken URL or unreachable database: say which
        raise CliError(f"database upgrade of {_redact(url)} failed: {e}") from None
    console.print(f"database {escape(_redact(url))} is at the latest revision")


def _default_database_url() -> str:
    try:
        from controlplane.settings import Settings

        return Settings().db_url()
    except ImportError as e:
        raise CliError(f"no settings module in this build ({e}); pass --database-url") from None


def _redact(url: str) -> str:
    """Hide a password in a database URL."""
    import re

    return re.sub(r"(://[^:/@]+:)[^@]+@", r"\1***@", url)
