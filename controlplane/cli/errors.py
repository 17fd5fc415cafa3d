"""One way for every CLI command to fail: one red line on stderr and exit code 1, no traceback."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from controlplane.client import GpupoolError

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)

F = TypeVar("F", bound=Callable[..., Any])


class CliError(Exception):
    """A problem the user can fix; the message names what is wrong."""


def fail(message: str) -> typer.Exit:
    """Print ``message`` as one red line and return the Exit(1) to raise."""
    err_console.print(f"[bold red]error:[/] [red]{escape(' '.join(str(message).split()))}[/]",
                      soft_wrap=True)
    return typer.Exit(1)


def handle_errors(fn: F) -> F:
    """Turn GpupoolError/CliError (and Ctrl-C) into one line and an exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except GpupoolError as e:
            hint = ("; pass --token, set GPUPOOL_TOKEN, or run `gpupool up` (it writes the config "
                    "file)") if e.status == 401 else ""
            raise fail(f"{e}{hint}") from None
        except CliError as e:
            raise fail(str(e)) from None
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted[/]")
            raise typer.Exit(130) from None
        except OSError as e:
            raise fail(f"{e.strerror or e}: {e.filename}" if e.filename else str(e)) from None

    return wrapper  # type: ignore[return-value]
