"""Agent configuration: defaults < YAML file < GPUPOOL_AGENT_* env < explicit arguments.

``AgentConfig`` is a plain pydantic model (no typer) so the CLI, ``python -m agent`` and tests
build it the same way. ``load_config`` raises ConfigError with a message naming the bad setting.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

ENV_PREFIX = "GPUPOOL_AGENT_"


class ConfigError(ValueError):
    """A setting is wrong; the message names it and says what is expected."""


def _default_state_dir() -> Path:
    if os.geteuid() == 0:
        return Path("/var/lib/gpupool-agent")
    base = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    return Path(base) / "gpupool" / "agent"


def _default_jobs_dir() -> Path:
    if os.geteuid() == 0:
        return Path("/var/lib/gpupool-jobs")
    base = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    return Path(base) / "gpupool" / "jobs"


class AgentConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    server_url: str = "http://127.0.0.1:8000"
    ca_bundle: Path | None = Field(None, description="PEM certificates to trust for an https server")
    token: str | None = Field(None, description="bootstrap token, used to register once")
    node_name: str = Field(default_factory=lambda: socket.gethostname().lower())  # a DNS-1123 name
    address: str | None = Field(None, description="where this node's job endpoints are reached")
    backend: str = Field("nvml", description='"nvml" or "simulate:<nodes>x<gpus>x<model>"')
    state_dir: Path = Field(default_factory=_default_state_dir)
    mps: Literal["managed", "external", "off"] = "managed"
    exporter_port: int = Field(9400, ge=0, le=65535, description="Prometheus + /healthz; 0 = off")
    heartbeat_interval_s: float = Field(10.0, gt=0, le=3600)
    poll_wait_s: float = Field(30.0, ge=0, le=300, description="assignment long-poll wait")
    tick_s: float = Field(0.5, gt=0, le=10, description="supervision and watchdog period")
    memory_grace_s: float | None = Field(1.0, ge=0, description="watchdog grace; None = off")
    telemetry_buffer: int = Field(20000, ge=10, description="samples kept while the server is down")
    stop_jobs_on_exit: bool = Field(False, description="stop jobs when the agent stops (default: "
                                     "leave them running for the next start to re-adopt)")
    fencing: bool = Field(True, description="stop every job when the control plane has not answered "
                                            "for the node loss timeout (its copies are requeued elsewhere)")
    sandbox: Literal["auto", "on", "off"] = Field(
        "auto", description="run jobs as their own uid in their own cgroup (auto: when root with cgroups)")
    jobs_dir: Path = Field(default_factory=_default_jobs_dir,
                           description="job working directories (outside the state dir)")
    uid_range: str = Field("300000-399999", description="uids/gids handed to jobs")
    identity_scope: Literal["team", "job"] = Field("team", description="one uid per team or per job")
    cgroup_parent: str = Field("gpupool", pattern=r"^[A-Za-z0-9_.-]+$",
                               description="cgroup under which each job member gets its own")
    pids_max: int = Field(4096, ge=16, description="processes + threads per job member")
    device_root: Path = Field(Path("/dev"), description="where /dev/nvidiaN nodes are")
    container_runtime: Literal["auto", "podman", "docker"] = "auto"
    container_ulimits: list[str] = Field(default_factory=lambda: ["nofile=1024:1024", "nproc=1024:1024"])
    log_max_bytes: int = Field(64 * 1024 * 1024, ge=4096,
                               description="per stream and job member; the newest output is kept")
    job_retention_s: float = Field(7 * 86400, ge=0, description="finished job directories kept this long")
    housekeeping_interval_s: float = Field(600, gt=0, description="how often old job dirs are removed")
    labels: dict[str, str] = Field(default_factory=dict)
    log_level: str = "INFO"
    config_file: Path | None = None

    @field_validator("server_url")
    @classmethod
    def _url(cls, v: str) -> str:
        p = urlparse(v)
        if p.scheme not in ("http", "https") or not p.netloc:
            raise ValueError(f"must be an http(s) URL like http://127.0.0.1:8000, not {v!r}")
        return v.rstrip("/")

    @field_validator("uid_range")
    @classmethod
    def _uids(cls, v: str) -> str:
        from agent.sandbox.identity import parse_range

        parse_range(v)
        return v

    @field_validator("ca_bundle")
    @classmethod
    def _ca_bundle(cls, v: Path | None) -> Path | None:
        if v is not None and not v.expanduser().is_file():
            raise ValueError(f"no such file {str(v)!r} (a PEM file of CA certificates)")
        return v

    @field_validator("backend")
    @classmethod
    def _backend(cls, v: str) -> str:
        if not v.strip():
            raise ValueError('must be "nvml" or "simulate:<nodes>x<gpus>x<model>"')
        return v.strip()

    def node_address(self) -> str:
        """The configured address, else the local IP that routes to the server (loopback stays)."""
        if self.address:
            return self.address
        host = urlparse(self.server_url).hostname or "127.0.0.1"
        if host in ("127.0.0.1", "localhost", "::1"):
            return "127.0.0.1"
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.connect((host, 9))  # UDP connect sends nothing; it only picks a route
                return s.getsockname()[0]
        except OSError:
            return socket.gethostname()


_FIELDS = set(AgentConfig.model_fields)


def _from_env(environ: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in environ.items():
        if not key.startswith(ENV_PREFIX):
            continue
        name = key[len(ENV_PREFIX):].lower()
        if name not in _FIELDS:
            raise ConfigError(f"unknown setting {key}; known: "
                              + ", ".join(ENV_PREFIX + f.upper() for f in sorted(_FIELDS)))
        if name == "labels":
            value = dict(kv.split("=", 1) for kv in value.split(",") if "=" in kv)
        elif name == "container_ulimits":
            value = [v.strip() for v in value.split(",") if v.strip()]
        elif name == "memory_grace_s" and value.lower() in ("", "off", "none"):
            value = None
        out[name] = value
    return out


def _from_file(path: Path) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of settings")
    data = {str(k).replace("-", "_"): v for k, v in data.items()}
    unknown = set(data) - _FIELDS
    if unknown:
        raise ConfigError(f"config file {path}: unknown setting(s) {', '.join(sorted(unknown))}")
    return data


def load_config(overrides: dict[str, Any] | None = None,
                environ: dict[str, str] | None = None) -> AgentConfig:
    """Merge file, env and ``overrides`` (None values are ignored) into a validated config."""
    environ = dict(os.environ if environ is None else environ)
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    env = _from_env(environ)
    path = overrides.get("config_file") or env.get("config_file")
    merged: dict[str, Any] = {}
    if path:
        merged.update(_from_file(Path(path)))
    merged.update(env)
    merged.update(overrides)
    try:
        return AgentConfig.model_validate(merged)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid agent configuration: {problems}") from None
