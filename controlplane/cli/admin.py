"""Admin commands: `token create/list/revoke`, `db upgrade` (more under `gpupool admin`)."""

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
    expires_in: str = typer.Option(None, "--expires-in", metavar="DURATION",
                                   help="lifetime like 90d, 12h, 30m or seconds (default: never expires)"),
) -> None:
    """Create an API token; the secret is shown once."""
    lifetime = parse_duration(expires_in, "--expires-in") if expires_in else None
    with target(ctx).client() as client:
        if not user:
            user = client.whoami().user
            if not user:
                raise CliError("this token belongs to no user; pass --user")
        answer = client.create_token(user, name, expires_in_s=lifetime)
    if quiet:
        print(answer.token)
        return
    until = f", expires {answer.expires_at.isoformat()}" if answer.expires_at else ""
    console.print(f"token {escape(answer.id)} for user {escape(answer.user)}{escape(until)} "
                  "(shown once, keep it safe):")
    print(answer.token)


@token_app.command("list")
@handle_errors
def token_list(ctx: typer.Context) -> None:
    """Every active token (user, node and bootstrap): id, owner, expiry."""
    from controlplane.cli.render_admin import tokens_table

    with target(ctx).client() as client:
        items = client.list_tokens().items
    console.print(tokens_table(items) if items else "no active tokens")


@token_app.command("revoke")
@handle_errors
def token_revoke(ctx: typer.Context, token_id: str) -> None:
    """Revoke a token at once (a user's, a node's or a bootstrap token)."""
    with target(ctx).client() as client:
        client.delete_token(token_id)
    console.print(f"revoked token {escape(token_id)}")


def parse_duration(text: str, option: str) -> float:
    """'90d' / '12h' / '30m' / '45s' / '3600' -> seconds; a clear error otherwise."""
    units = {"d": 86400, "h": 3600, "m": 60, "s": 1}
    raw = text.strip().lower()
    number, unit = (raw[:-1], raw[-1]) if raw[-1:] in units else (raw, "s")
    try:
        seconds = float(number) * units[unit]
    except ValueError:
        raise CliError(f"{option} {text!r}: use a duration like 90d, 12h, 30m or seconds") from None
    if not seconds > 0:
        raise CliError(f"{option} {text!r}: must be longer than zero")
    return seconds


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
