"""Run `gpupool ...` in-process (typer's CliRunner) against a server as its admin."""

from __future__ import annotations

from collections.abc import Callable

from typer.testing import CliRunner

from controlplane.cli.main import app


def admin_cli(server, monkeypatch, home, columns: int = 250) -> Callable[..., tuple[int, str, str]]:  # noqa: ANN001
    """A ``cli(*args) -> (exit code, stdout, stderr)`` talking to ``server`` with its admin token."""
    monkeypatch.setenv("GPUPOOL_SERVER", server.url)
    monkeypatch.setenv("GPUPOOL_TOKEN", server.admin_token)
    monkeypatch.setenv("GPUPOOL_HOME", str(home))  # no stray config file
    monkeypatch.setenv("COLUMNS", str(columns))
    runner = CliRunner()

    def cli(*args: str) -> tuple[int, str, str]:
        result = runner.invoke(app, list(args), catch_exceptions=False)
        return result.exit_code, result.stdout, result.stderr

    return cli
