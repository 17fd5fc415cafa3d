"""Where the CLI finds its server, token and CA bundle: options, then GPUPOOL_* env, then the config file.

`gpupool up` writes the config file ($GPUPOOL_HOME/config.yaml when GPUPOOL_HOME is set, else
~/.config/gpupool/config.yaml; GPUPOOL_CONFIG overrides the path) so later commands just work.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from controlplane.cli.errors import CliError
from controlplane.client import DEFAULT_SERVER, GpupoolClient


def config_path() -> Path:
    if os.environ.get("GPUPOOL_CONFIG"):
        return Path(os.environ["GPUPOOL_CONFIG"]).expanduser()
    if os.environ.get("GPUPOOL_HOME"):
        return Path(os.environ["GPUPOOL_HOME"]).expanduser() / "config.yaml"
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "gpupool" / "config.yaml"


def read_config(path: Path | None = None) -> dict:
    """The config file as a mapping ({} when absent); a broken file is a clear error."""
    path = path or config_path()
    if not path.exists():
        return {}
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise CliError(f"config file {path} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise CliError(f"config file {path} must be a mapping with 'server' and 'token'")
    return data


def write_config(server: str, token: str | None, path: Path | None = None, **extra: object) -> Path:
    """Write server + token (+ extra keys like ca_bundle) for later commands; owner-only file."""
    path = path or config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"server": server, "token": token, **{k: v for k, v in extra.items() if v is not None}}
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        yaml.safe_dump(data, fh, sort_keys=False)
    tmp.replace(path)
    return path


@dataclass
class Target:
    server: str
    token: str | None
    ca_bundle: str | None = None

    def client(self, timeout: float = 30.0) -> GpupoolClient:
        return GpupoolClient(self.server, self.token, timeout=timeout, ca_bundle=self.ca_bundle)


def resolve(server: str | None, token: str | None, ca_bundle: str | None = None) -> Target:
    """Options win, then GPUPOOL_SERVER / GPUPOOL_TOKEN / GPUPOOL_CA_BUNDLE, then the config file."""
    cfg: dict = {}
    if not server or not token or not ca_bundle:
        cfg = read_config()
    server = server or os.environ.get("GPUPOOL_SERVER") or cfg.get("server") or DEFAULT_SERVER
    token = token or os.environ.get("GPUPOOL_TOKEN") or cfg.get("token")
    ca_bundle = ca_bundle or os.environ.get("GPUPOOL_CA_BUNDLE") or cfg.get("ca_bundle")
    if not str(server).startswith(("http://", "https://")):
        server = f"http://{server}"
    return Target(server=str(server), token=str(token) if token else None,
                  ca_bundle=str(ca_bundle) if ca_bundle else None)
