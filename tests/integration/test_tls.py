"""HTTPS: the server serves TLS from GPUPOOL_TLS_CERT/KEY; the SDK, CLI and agent trust a CA bundle.

Certificates are made here with openssl: a throwaway CA and a server certificate it signs for
127.0.0.1/localhost. Without the bundle every client fails with a message naming --ca-bundle.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from controlplane.client import GpupoolClient, GpupoolError
from controlplane.core.tls import verify_with
from controlplane.server import tls_options
from controlplane.settings import Settings
from tests.support.db import database
from tests.support.server import REPO, free_port, start_server
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.timeout(180),
              pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")]


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> dict[str, Path]:  # noqa: ANN001
    """ca.pem (the bundle), server.pem + server.key signed by it, and a key that matches nothing."""
    d = tmp_path_factory.mktemp("certs")
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
             "-subj", "/CN=gpupool test CA", cwd=d)
    _openssl("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost", cwd=d)
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "san.ext", cwd=d)
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-out", "other.key", cwd=d)
    return {name: d / name for name in ("ca.pem", "server.pem", "server.key", "other.key")}


@pytest.fixture(scope="module")
def https_server(certs, tmp_path_factory):  # noqa: ANN001, ANN201
    tmp = tmp_path_factory.mktemp("https")
    with database("sqlite", tmp) as url:
        env = {"GPUPOOL_TLS_CERT": str(certs["server.pem"]), "GPUPOOL_TLS_KEY": str(certs["server.key"])}
        srv = start_server(url, env=env, home=tmp / "home", ca_bundle=str(certs["ca.pem"]))
        try:
            yield srv
        finally:
            srv.stop()


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPUPOOL_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return {**env, "COLUMNS": "200", **extra}


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "controlplane.cli.main", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)


def test_sdk_trusts_the_ca_bundle_and_refuses_without_it(https_server, certs, monkeypatch) -> None:  # noqa: ANN001
    srv = https_server
    assert srv.url.startswith("https://")
    for bundle in (certs["ca.pem"], certs["server.pem"]):  # the CA, or the certificate itself
        with GpupoolClient(srv.url, srv.admin_token, ca_bundle=bundle) as c:
            assert c.whoami()["user"] == "admin"
    monkeypatch.delenv("GPUPOOL_CA_BUNDLE", raising=False)
    with GpupoolClient(srv.url, srv.admin_token) as c, pytest.raises(GpupoolError) as err:
        c.whoami()
    assert "not trusted" in str(err.value) and "--ca-bundle" in str(err.value), err.value
    monkeypatch.setenv("GPUPOOL_CA_BUNDLE", str(certs["ca.pem"]))  # the SDK reads it too
    with GpupoolClient(srv.url, srv.admin_token) as c:
        assert c.whoami()["user"] == "admin"
    with pytest.raises(GpupoolError, match="does not exist"):
        GpupoolClient(srv.url, ca_bundle=certs["ca.pem"].parent / "missing.pem")
    # plain HTTP on the HTTPS port gets nothing useful
    with pytest.raises(httpx.HTTPError):
        httpx.get(srv.url.replace("https://", "http://") + "/readyz", timeout=5)


def test_cli_ca_bundle_option_and_clear_error(https_server, certs) -> None:  # noqa: ANN001
    srv = https_server
    env = _clean_env(GPUPOOL_SERVER=srv.url, GPUPOOL_TOKEN=srv.admin_token,
                     GPUPOOL_CONFIG=str(srv.home / "none.yaml"))
    ok = _cli("--ca-bundle", str(certs["ca.pem"]), "queues", env=env)
    assert ok.returncode == 0 and "default" in ok.stdout, ok.stdout + ok.stderr
    bad = _cli("queues", env=env)
    assert bad.returncode == 1
    assert "not trusted" in bad.stderr and "--ca-bundle" in bad.stderr and "Traceback" not in bad.stderr


def test_agent_registers_over_https_with_its_ca_bundle(https_server, certs, tmp_path) -> None:  # noqa: ANN001
    srv = https_server
    log = tmp_path / "agent.log"
    env = _clean_env(GPUPOOL_AGENT_CA_BUNDLE=str(certs["ca.pem"]))
    cmd = [sys.executable, "-m", "agent", "--server", srv.url, "--token", srv.bootstrap_token,
           "--node-name", "tls-node", "--simulate", "1x1xT4", "--state-dir", str(tmp_path / "state"),
           "--exporter-port", "0", "--heartbeat-interval", "0.5", "--poll-wait", "1"]
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        with httpx.Client(base_url=srv.url, headers=srv.headers(), verify=verify_with(certs["ca.pem"])) as api:
            def ready() -> bool:
                assert proc.poll() is None, log.read_text(errors="replace")[-2000:]
                items = api.get("/api/v1/nodes").json()["items"]
                return any(n["name"] == "tls-node" and n["state"] == "ready" for n in items)
            wait_until(ready, 60, "the agent to register over HTTPS", interval=0.3)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    bad = subprocess.run(cmd[:-6] + ["--ca-bundle", str(tmp_path / "missing.pem")], cwd=REPO,
                         env=_clean_env(), capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "ca_bundle" in bad.stderr and "missing.pem" in bad.stderr, bad.stderr


def test_tls_settings_name_what_is_wrong(certs) -> None:  # noqa: ANN001
    with pytest.raises(ValueError, match="GPUPOOL_TLS_KEY is not set"):
        Settings(tls_cert=certs["server.pem"])
    with pytest.raises(ValueError, match="no such file"):
        Settings(tls_cert=certs["server.pem"], tls_key=certs["server.pem"].parent / "nope.key")
    with pytest.raises(ValueError, match="cannot load the TLS certificate"):
        tls_options(Settings(tls_cert=certs["server.pem"], tls_key=certs["other.key"]))
    assert tls_options(Settings(tls_cert=certs["server.pem"], tls_key=certs["server.key"])) == {
        "ssl_certfile": str(certs["server.pem"]), "ssl_keyfile": str(certs["server.key"])}
    cli = _cli("server", "--port", str(free_port()), "--tls-cert", str(certs["server.pem"]),
               "--tls-key", str(certs["other.key"]), env=_clean_env())
    assert cli.returncode == 1 and "cannot load the TLS certificate" in cli.stderr, cli.stderr


def test_up_serves_https_and_writes_the_bundle_to_the_config(certs, tmp_path) -> None:  # noqa: ANN001
    home, port = tmp_path / "home", free_port()
    log = tmp_path / "up.log"
    env = _clean_env(GPUPOOL_HOME=str(home), PYTHONUNBUFFERED="1")
    with open(log, "wb") as fh:  # a self-signed-style setup: up trusts the CA given
        proc = subprocess.Popen([sys.executable, "-m", "controlplane.cli.main", "up", "--port", str(port),
                                 "--simulate", "1x1xT4", "--tls-cert", str(certs["server.pem"]),
                                 "--tls-key", str(certs["server.key"]), "--ca-bundle", str(certs["ca.pem"])],
                                cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def up() -> bool:
            text = log.read_text(errors="replace")
            assert proc.poll() is None, text
            return "gpupool is up" in text
        wait_until(up, 120, "gpupool up over HTTPS", interval=0.3)
        config = yaml.safe_load((home / "config.yaml").read_text())
        assert config["server"] == f"https://127.0.0.1:{port}"
        assert config["ca_bundle"] == str(certs["ca.pem"].resolve())
        nodes = _cli("nodes", env=env)  # server, token and bundle all from the config file
        assert nodes.returncode == 0 and "T4" in nodes.stdout, nodes.stdout + nodes.stderr
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=90)
