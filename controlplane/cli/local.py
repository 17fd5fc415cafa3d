"""Run the pool: `server` (API + scheduler), `agent` (one node), and `up` (all of it on this machine).

`up` is a small supervisor: it prepares $GPUPOOL_HOME (SQLite database, bootstrap token, admin
token), starts `gpupool server` and one `gpupool agent` per (real or simulated) node as child
processes with their logs under $GPUPOOL_HOME/logs, writes the CLI config file and stops them all
on Ctrl-C. A child that dies takes `up` down with the tail of its log, so nothing fails quietly.
With --tls-cert/--tls-key the server speaks HTTPS; `up`, its agents and the CLI config trust
--ca-bundle, else the certificate itself (right for a self-signed one).
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import typer
from rich.markup import escape
from rich.panel import Panel

from controlplane.cli import runtime
from controlplane.cli.config import config_path, read_config, write_config
from controlplane.cli.errors import CliError, console, err_console, handle_errors
from controlplane.client import GpupoolClient, GpupoolError
from controlplane.core.tls import is_untrusted_certificate

DEFAULT_SIM_SHAPE = "1x4xH100-80GB"


def register(app: typer.Typer) -> None:
    app.command("up")(up)
    app.command("server")(server)
    app.command("agent")(agent)


@handle_errors
def server(
    host: str = typer.Option("127.0.0.1", "--host", help="address to listen on"),
    port: int = typer.Option(8080, "--port", "-p", min=1, max=65535),
    tls_cert: Path = typer.Option(None, "--tls-cert", help="PEM certificate (chain): serve HTTPS "
                                  "(default: GPUPOOL_TLS_CERT)"),
    tls_key: Path = typer.Option(None, "--tls-key", help="PEM private key of --tls-cert "
                                 "(default: GPUPOOL_TLS_KEY)"),
) -> None:
    """Run the control plane: REST API, dashboard, scheduler and liveness loops."""
    runtime.run_server(host, port, tls_cert=tls_cert, tls_key=tls_key)


@handle_errors
def agent(
    server_url: str = typer.Option(None, "--server", "-s", help="control plane URL "
                                   "(default: GPUPOOL_AGENT_SERVER_URL or the config file)"),
    token: str = typer.Option(None, "--token", "-t", envvar="GPUPOOL_BOOTSTRAP_TOKEN",
                              help="bootstrap token for registering this node (first start only)"),
    node: str = typer.Option(None, "--node", "-n", help="node name (default: hostname)"),
    backend: str = typer.Option(None, "--backend", "-b",
                                help="'nvml' (default) or 'simulate:1x4xH100-80GB'"),
    simulate: str = typer.Option(None, "--simulate", metavar="GPUSxMODEL",
                                 help="shorthand for --backend simulate:GPUSxMODEL"),
    state_dir: Path = typer.Option(None, "--state-dir", help="where the agent keeps its state"),
    exporter_port: int = typer.Option(None, "--exporter-port", min=0, max=65535,
                                      help="Prometheus exporter + /healthz port (0 = off; 9400)"),
    mps: str = typer.Option(None, "--mps", help="managed (default) | external | off"),
    heartbeat_interval: float = typer.Option(None, "--heartbeat-interval", min=0.1,
                                             help="seconds between heartbeats"),
    config_file: Path = typer.Option(None, "--config", help="YAML file of agent settings"),
    ca_bundle: Path = typer.Option(None, "--ca-bundle", help="PEM certificates to trust for an "
                                   "https server (default: GPUPOOL_AGENT_CA_BUNDLE)"),
    stop_jobs_on_exit: bool = typer.Option(None, "--stop-jobs-on-exit/--keep-jobs-on-exit",
                                           help="stop this node's jobs when the agent stops "
                                                "(default: keep them for the next start to adopt)"),
) -> None:
    """Run a node agent: registers this node's GPUs and runs the jobs placed on it."""
    if simulate:
        backend = f"simulate:{simulate}"
    runtime.run_agent(server_url=server_url, token=token, node_name=node, backend=backend,
                      state_dir=state_dir, exporter_port=exporter_port, mps=mps,
                      heartbeat_interval_s=heartbeat_interval, config_file=config_file,
                      ca_bundle=ca_bundle, stop_jobs_on_exit=stop_jobs_on_exit)


@handle_errors
def up(
    host: str = typer.Option("127.0.0.1", "--host", help="address the API listens on"),
    port: int = typer.Option(8080, "--port", "-p", min=1, max=65535),
    simulate: str = typer.Option(None, "--simulate", metavar="NODESxGPUSxMODEL",
                                 help=f"simulated GPUs, e.g. 2x4xH100-80GB (default without "
                                      f"NVIDIA GPUs: {DEFAULT_SIM_SHAPE})"),
    tls_cert: Path = typer.Option(None, "--tls-cert", envvar="GPUPOOL_TLS_CERT",
                                  help="PEM certificate: serve HTTPS (with --tls-key)"),
    tls_key: Path = typer.Option(None, "--tls-key", envvar="GPUPOOL_TLS_KEY",
                                 help="PEM private key of --tls-cert"),
    ca_bundle: Path = typer.Option(None, "--ca-bundle", envvar="GPUPOOL_CA_BUNDLE",
                                   help="PEM CA certificates that sign --tls-cert "
                                        "(default: trust --tls-cert itself)"),
) -> None:
    """Start a whole pool on this machine: server, scheduler and local agent(s). Ctrl-C stops it."""
    tls_args, trust = _tls(tls_cert, tls_key, ca_bundle)
    home = runtime.gpupool_home()
    home.mkdir(parents=True, exist_ok=True)
    nodes = _plan_nodes(simulate)
    if _port_busy(host, port):
        raise CliError(f"port {port} on {host} is already in use; pick another with --port")
    boot_token = _bootstrap_token(home)
    admin_token, fresh = _admin_token()
    env = {**os.environ, "GPUPOOL_HOME": str(home), "GPUPOOL_BOOTSTRAP_TOKEN": boot_token}
    env.pop("GPUPOOL_ADMIN_TOKEN", None)
    new_sqlite = not os.environ.get("GPUPOOL_DATABASE_URL") and not (home / "gpupool.db").exists()
    if fresh or new_sqlite:  # seeds the first admin; an existing database keeps its own
        env["GPUPOOL_ADMIN_TOKEN"] = admin_token
    scheme = "https" if tls_args else "http"
    url = f"{scheme}://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    logs = home / "logs"
    logs.mkdir(exist_ok=True)
    children: list[tuple[str, subprocess.Popen, Path]] = []
    stopping = False

    def on_term(*_: object) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, on_term)
    try:
        children.append(_spawn("server", ["server", "--host", host, "--port", str(port), *tls_args],
                               env, logs))
        with console.status(f"starting the control plane on {url} ..."):
            _wait_ready(url, children, trust)
        _check_admin(url, admin_token, trust)
        cfg_path = write_config(url, admin_token, ca_bundle=trust)
        for name, spec in nodes:
            children.append(_spawn(f"agent-{name}", [
                "agent", "--server", url, "--token", boot_token, "--node", name,
                "--backend", spec, "--state-dir", str(home / "agents" / name),
                "--exporter-port", _exporter_port(spec), "--stop-jobs-on-exit",
                *(["--ca-bundle", trust] if trust else [])], env, logs))
        with console.status(f"waiting for {len(nodes)} node(s) to register ..."):
            _wait_nodes(url, admin_token, {n for n, _ in nodes}, children, trust)
        _banner(url, admin_token, fresh, nodes, cfg_path, logs)
        while True:
            _check_children(children)
            time.sleep(0.5)
    except KeyboardInterrupt:
        stopping = True
        console.print("stopping gpupool ...")
    finally:
        signal.signal(signal.SIGTERM, old)
        _stop_all(children)
        if stopping:
            console.print("stopped")


def _tls(cert: Path | None, key: Path | None, ca_bundle: Path | None) -> tuple[list[str], str | None]:
    """The server's TLS arguments and the CA bundle `up` and its agents trust (None: plain HTTP)."""
    if cert is None and key is None:
        return [], None
    if cert is None or key is None:
        missing = "--tls-key" if key is None else "--tls-cert"
        raise CliError(f"HTTPS needs both --tls-cert and --tls-key; {missing} is missing")
    for option, path in (("--tls-cert", cert), ("--tls-key", key), ("--ca-bundle", ca_bundle)):
        if path is not None and not path.expanduser().is_file():
            raise CliError(f"{option}: no such file {str(path)!r}")
    cert, key = cert.expanduser().resolve(), key.expanduser().resolve()
    trust = (ca_bundle.expanduser().resolve() if ca_bundle else cert)
    return ["--tls-cert", str(cert), "--tls-key", str(key)], str(trust)


def _plan_nodes(simulate: str | None) -> list[tuple[str, str]]:
    """(node name, backend spec) for every agent `up` starts."""
    host = socket.gethostname().split(".")[0].lower() or "node"  # node names are DNS-1123: lowercase
    if not simulate and runtime.has_nvidia_gpu():
        return [(host, "nvml")]
    nodes, gpus, model = runtime.parse_shape(simulate or DEFAULT_SIM_SHAPE)
    if nodes == 1:
        return [(f"{host}-sim", f"simulate:1x{gpus}x{model}")]
    return [(f"{host}-sim-{i}", f"simulate:1x{gpus}x{model}") for i in range(nodes)]


def _exporter_port(spec: str) -> str:
    """Real GPUs get the usual Prometheus exporter port (9400) when it is free; simulated none."""
    return "9400" if spec == "nvml" and not _port_busy("0.0.0.0", 9400) else "0"


def _bootstrap_token(home: Path) -> str:
    """The node-registration token of this home, created once (owner-only file)."""
    if os.environ.get("GPUPOOL_BOOTSTRAP_TOKEN"):
        return os.environ["GPUPOOL_BOOTSTRAP_TOKEN"]
    path = home / "bootstrap-token"
    if path.exists() and path.read_text().strip():
        return path.read_text().strip()
    token = "gpb_" + secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token)
    return token


def _admin_token() -> tuple[str, bool]:
    """The admin token of the CLI config (reused), else a new one; True when new.

    The server seeds the first admin with GPUPOOL_ADMIN_TOKEN on an empty database only.
    """
    token = os.environ.get("GPUPOOL_TOKEN") or read_config().get("token")
    if token:
        return str(token), False
    return "gpa_" + secrets.token_urlsafe(32), True


def _check_admin(url: str, token: str, trust: str | None) -> None:
    with GpupoolClient(url, token, timeout=10.0, ca_bundle=trust) as client:
        try:
            client.whoami()
        except GpupoolError as e:
            if e.status == 401:
                raise CliError(
                    f"the database of {runtime.gpupool_home()} already has an admin whose token is "
                    f"not in {config_path()}; set GPUPOOL_TOKEN, or use a fresh GPUPOOL_HOME") from None
            raise


def _port_busy(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host if host not in ("0.0.0.0", "") else "0.0.0.0", port))
        except OSError:
            return True
    return False


def _spawn(name: str, args: list[str], env: dict, logs: Path) -> tuple[str, subprocess.Popen, Path]:
    log = logs / f"{name}.log"
    fh = open(log, "ab")
    proc = subprocess.Popen([sys.executable, "-m", "controlplane.cli.main", *args], env=env,
                            stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    fh.close()
    return name, proc, log


def _check_children(children: list[tuple[str, subprocess.Popen, Path]]) -> None:
    for name, proc, log in children:
        code = proc.poll()
        if code is not None:
            tail = _tail(log, 15)
            err_console.print(f"[red]--- last lines of {log} ---[/]\n{escape(tail)}")
            raise CliError(f"{name} exited with code {code}; see {log}")


def _tail(path: Path, lines: int) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _wait_ready(url: str, children: list, trust: str | None, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    with GpupoolClient(url, timeout=2.0, ca_bundle=trust) as client:
        while time.monotonic() < deadline:
            _check_children(children)
            try:
                client.ready()
                return
            except GpupoolError as e:
                if is_untrusted_certificate(e):  # waiting will not help
                    raise CliError(str(e)) from None
                time.sleep(0.2)
    raise CliError(f"the control plane did not become ready at {url} within {timeout:.0f}s")


def _wait_nodes(url: str, token: str | None, names: set[str], children: list, trust: str | None,
                timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    with GpupoolClient(url, token, timeout=5.0, ca_bundle=trust) as client:
        while time.monotonic() < deadline:
            _check_children(children)
            try:
                items = client.list_nodes().get("items", [])
                ready = {n["name"] for n in items if n.get("state") == "ready"}
                if names <= ready:
                    return
            except GpupoolError:
                pass
            time.sleep(0.3)
    raise CliError(f"node(s) {', '.join(sorted(names))} did not register within {timeout:.0f}s")


def _banner(url: str, token: str | None, fresh: bool, nodes: list, cfg: Path, logs: Path) -> None:
    lines = [f"[bold green]gpupool is up[/] with {len(nodes)} node(s): "
             + escape(", ".join(f"{n} ({s})" for n, s in nodes)),
             f"API        {url}/api/v1",
             f"API docs   {url}/docs",
             f"dashboard  {url}/"]
    if token and fresh:
        lines.append(f"admin token (shown once): [bold]{escape(token)}[/]")
    elif token:
        lines.append(f"admin token: in {escape(str(cfg))}")
    lines += [f"CLI config {escape(str(cfg))}",
              f"logs       {escape(str(logs))}", "Ctrl-C stops the pool."]
    console.print(Panel("\n".join(lines), expand=False))
    sys.stdout.flush()


def _stop_all(children: list[tuple[str, subprocess.Popen, Path]]) -> None:
    """Agents first (they stop their jobs and report it), then the server; SIGKILL after a grace."""
    for name, proc, _ in sorted(children, key=lambda c: c[0] == "server"):
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            try:
                proc.wait(timeout=45)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
