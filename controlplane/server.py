"""The control-plane server: ``create_app(settings)`` and ``run_server(host, port, settings)``.

``create_app`` migrates the database, bootstraps an empty one (team/queue "default", user
"admin"; the new admin token is on ``app.state.admin_token``, None when not new) and runs the
loops (scheduling, liveness, retention, usage history) in this process while the app is served.
``gpupool server`` and ``gpupool up`` call ``run_server``; ``python -m controlplane.server``
does the same.
"""

from __future__ import annotations

import argparse
import logging
import sys
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

from controlplane.api.app import build_app
from controlplane.db import migrate
from controlplane.db.database import Database
from controlplane.loops.runner import Loops
from controlplane.metrics import ControlPlaneMetrics
from controlplane.services.auth import bootstrap
from controlplane.settings import Settings

log = logging.getLogger("gpupool.server")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    url = settings.db_url()
    db = Database(url, pool_size=20)
    migrate.upgrade(url, engine=db.engine)
    admin_token = bootstrap(db, admin_token=settings.admin_token,
                            bootstrap_token=settings.bootstrap_token)
    metrics = ControlPlaneMetrics(db)
    loops = Loops(db, settings, observer=metrics.observe_cycle) if settings.run_loops else None

    @asynccontextmanager
    async def lifespan(_: FastAPI):  # noqa: ANN202
        import anyio.to_thread

        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.threads
        if loops is not None:
            loops.start()
        try:
            yield
        finally:
            if loops is not None:
                loops.stop()
            db.dispose()

    app = build_app(db, settings, metrics=metrics, loops=loops, lifespan=lifespan)
    app.state.admin_token = admin_token
    return app


def run_server(host: str = "127.0.0.1", port: int = 8080, settings: Settings | None = None,
               *, print_token: bool = True) -> None:
    """Serve the API with uvicorn (httptools, uvloop) plus the loops, until interrupted."""
    import uvicorn

    settings = settings or Settings()
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    common = dict(host=host, port=port, log_level=settings.log_level.lower(), loop="uvloop",
                  http="httptools", access_log=False, timeout_graceful_shutdown=5,
                  timeout_keep_alive=75,  # longer than clients keep idle connections
                  proxy_headers=True, forwarded_allow_ips=settings.forwarded_allow_ips,
                  **tls_options(settings))
    if settings.workers > 1:
        token = prepare_database(settings)
        _print_token(token if print_token else None)
        _export(settings)  # worker processes read their settings from the environment
        uvicorn.run("controlplane.server:worker_app", factory=True, workers=settings.workers, **common)
        return
    app = create_app(settings)
    _print_token(app.state.admin_token if print_token else None)
    uvicorn.run(app, **common)


def tls_options(settings: Settings) -> dict:
    """uvicorn's ssl options for GPUPOOL_TLS_CERT/KEY; a pair that does not load is a ValueError."""
    if settings.tls_cert is None or settings.tls_key is None:
        return {}
    import ssl

    cert, key = Path(settings.tls_cert).expanduser(), Path(settings.tls_key).expanduser()
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as err:
        raise ValueError(f"cannot load the TLS certificate {cert} with key {key}: {err}") from None
    return {"ssl_certfile": str(cert), "ssl_keyfile": str(key)}


def prepare_database(settings: Settings) -> str | None:
    """Migrate and bootstrap once; returns the new admin token (None if not a first start)."""
    url = settings.db_url()
    db = Database(url, pool_size=1)
    try:
        migrate.upgrade(url, engine=db.engine)
        return bootstrap(db, admin_token=settings.admin_token, bootstrap_token=settings.bootstrap_token)
    finally:
        db.dispose()


def worker_app() -> FastAPI:
    """App factory for uvicorn worker processes (settings from GPUPOOL_* variables)."""
    return create_app(Settings())


def _print_token(token: str | None) -> None:
    if token:
        print(f"gpupool: first start; admin token (shown once, store it): {token}", flush=True)


def _export(settings: Settings) -> None:
    import json
    import os

    for name, value in settings.model_dump(mode="json").items():
        if value is not None:
            os.environ[f"GPUPOOL_{name.upper()}"] = value if isinstance(value, str) else json.dumps(value)
    os.environ["GPUPOOL_DATABASE_URL"] = settings.db_url()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m controlplane.server",
                                     description="Run the gpupool control-plane server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--tls-cert", help="PEM certificate (chain) to serve HTTPS (GPUPOOL_TLS_CERT)")
    parser.add_argument("--tls-key", help="PEM private key of --tls-cert (GPUPOOL_TLS_KEY)")
    args = parser.parse_args(argv)
    try:
        tls = {k: v for k, v in (("tls_cert", args.tls_cert), ("tls_key", args.tls_key)) if v}
        settings = Settings(**tls)
    except Exception as err:  # noqa: BLE001 - pydantic names the bad variable
        print(f"gpupool: invalid settings: {err}", file=sys.stderr)
        return 2
    try:
        run_server(args.host, args.port, settings)
    except ValueError as err:  # e.g. an unknown scheduler policy
        print(f"gpupool: invalid settings: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
