"""Server settings from GPUPOOL_* environment variables (pydantic-settings), with safe defaults."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Everything the control-plane server reads from its environment."""

    model_config = SettingsConfigDict(env_prefix="GPUPOOL_", extra="ignore")

    home: Path = Field(default_factory=lambda: Path.home() / ".local" / "share" / "gpupool")
    database_url: str | None = None  # default: sqlite at $GPUPOOL_HOME/gpupool.db
    bootstrap_token: str | None = None  # agents register with this (or admin-created ones)
    admin_token: str | None = None  # seeds the first admin's token instead of a random one
    heartbeat_timeout_s: float = 40.0
    heartbeat_interval_s: float = 10.0
    scheduler_interval_s: float = 2.0
    scheduler_policy: str | None = None  # None: the scheduler's default policy
    scheduler_lease_s: float = 15.0
    liveness_interval_s: float = 5.0
    history_interval_s: float = Field(60.0, gt=0)  # usage history sampling (dashboard charts)
    history_retention_s: float = Field(7 * 86400.0, gt=0)
    # per-job usage (docs/usage.md): bucket size (a minute; it must divide an hour), how long minute
    # rows are kept (hours are rolled up as soon as they close), how long hourly rows are kept
    usage_bucket_s: int = Field(60, ge=1, le=3600)
    usage_minute_retention_s: float = Field(7 * 86400.0, gt=0)
    usage_retention_s: float = Field(400 * 86400.0, gt=0)
    master_port_min: int = 29500
    master_port_max: int = 29999
    auth_cache_s: float = 2.0  # how long a verified token is trusted without a DB read
    assignment_poll_s: float = 0.25
    run_loops: bool = True
    threads: int = Field(8, ge=1, le=256)  # threadpool for users' DB work per worker (fewer = less GIL thrash)
    agent_threads: int = Field(4, ge=1, le=256)  # agents' own threadpool: never queued behind user reads
    log_max_bytes: int = Field(16 * 1024 * 1024, ge=4096)  # kept per job member stream (head + newest)
    log_head_bytes: int = Field(1024 * 1024, ge=0)  # of which the first bytes kept
    log_retention_s: float = Field(30 * 86400.0, gt=0)  # logs of attempts that ended longer ago go
    event_retention_s: float = Field(180 * 86400.0, gt=0)  # audit events older than this go
    max_log_followers: int = Field(64, ge=1)  # concurrent `logs --follow` streams per replica
    max_body_bytes: int = Field(1024 * 1024, ge=1024)  # larger request bodies: 413 before parsing
    rate_limit_per_s: float = Field(100.0, gt=0)  # per member or agent token (admins are exempt)
    rate_limit_burst: float = Field(200.0, ge=1)
    max_pending_per_queue: int = Field(10_000, ge=1)  # default cap on a queue's pending jobs
    workers: int = Field(1, ge=1, le=64)  # uvicorn worker processes (each runs loops; one leads)
    log_level: str = "info"
    replica_id: str | None = None
    # HTTPS served by the server itself (PEM files); a reverse proxy may terminate TLS instead
    tls_cert: Path | None = None
    tls_key: Path | None = None
    forwarded_allow_ips: str = "127.0.0.1"  # proxies whose X-Forwarded-Proto/For are trusted
    session_ttl_s: float = Field(12 * 3600.0, gt=0)  # a dashboard sign-in ends after this ...
    session_idle_s: float = Field(3600.0, gt=0)  # ... or after this long without a request
    # a node is cordoned once this many of its accelerators are unhealthy (0: never)
    unhealthy_gpus_to_cordon_node: int = Field(2, ge=0, le=1024)

    @field_validator("tls_cert", "tls_key", mode="before")
    @classmethod
    def _empty_is_unset(cls, v: object) -> object:
        return None if v == "" else v

    @field_validator("usage_bucket_s")
    @classmethod
    def _bucket_divides_an_hour(cls, v: int) -> int:
        if 3600 % v:
            raise ValueError(f"GPUPOOL_USAGE_BUCKET_S must divide 3600 (60 = a minute), got {v}")
        return v

    @model_validator(mode="after")
    def _tls_pair(self) -> Settings:
        if (self.tls_cert is None) != (self.tls_key is None):
            missing = "GPUPOOL_TLS_KEY" if self.tls_key is None else "GPUPOOL_TLS_CERT"
            raise ValueError(f"TLS needs a certificate and its key: {missing} is not set")
        for name, path in (("GPUPOOL_TLS_CERT", self.tls_cert), ("GPUPOOL_TLS_KEY", self.tls_key)):
            if path is not None and not Path(path).expanduser().is_file():
                raise ValueError(f"{name}: no such file {str(path)!r}")
        return self

    def db_url(self) -> str:
        """The SQLAlchemy URL to use (creates $GPUPOOL_HOME for the SQLite default)."""
        if self.database_url:
            return self.database_url
        home = Path(self.home).expanduser()
        home.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{home / 'gpupool.db'}"
