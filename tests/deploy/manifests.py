"""Rendering deploy/kubernetes for the tests: `kubectl kustomize` of an overlay, from a copy of the
tree so a test can fill the production secrets or change one side of a wiring."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
KUBE = ROOT / "deploy" / "kubernetes"
OVERLAYS = ("quickstart", "production")
KUBERNETES_VERSIONS = ("1.30.0", "1.31.0", "1.32.0", "1.33.0", "1.34.0")
PRODUCTION_SECRETS = {  # what docs/deploy.md tells an operator to put in secrets/
    "database-url": "postgresql+psycopg://gpupool:secret@db.example.internal:5432/gpupool"
                    "?sslmode=verify-full&sslrootcert=/etc/gpupool/db-ca/ca.crt",
    "bootstrap-token": "gpb_test_bootstrap",
    "admin-token": "gpa_test_admin",
}


def kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        pytest.fail("kubectl is not installed (scripts/setup.sh installs kubernetes-client)")
    return path


def copy_tree(dest: Path) -> Path:
    """deploy/kubernetes copied to ``dest`` with the production secrets filled in; returns it."""
    tree = dest / "kubernetes"
    shutil.copytree(KUBE, tree, ignore=shutil.ignore_patterns("__pycache__"))
    fill_production_secrets(tree / "overlays" / "production" / "secrets")
    return tree


def fill_production_secrets(secrets: Path) -> None:
    for name, value in PRODUCTION_SECRETS.items():
        (secrets / name).write_text(value)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=gpupool.example.com", "-keyout", str(secrets / "tls.key"),
                    "-out", str(secrets / "tls.crt")], check=True, capture_output=True)
    shutil.copy(secrets / "tls.crt", secrets / "db-ca.crt")


def render_text(directory: Path) -> str:
    result = subprocess.run([kubectl(), "kustomize", str(directory)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, f"kubectl kustomize {directory}: {result.stderr}"
    return result.stdout


def render(directory: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(render_text(directory)) if d]


def render_overlay(overlay: str, tree: Path | None = None) -> list[dict]:
    """The rendered objects of an overlay (of ``tree``, else of a fresh copy of the repository's)."""
    if tree is None:
        with tempfile.TemporaryDirectory() as tmp:
            return render(copy_tree(Path(tmp)) / "overlays" / overlay)
    return render(tree / "overlays" / overlay)


def find(docs: list[dict], kind: str, name: str) -> dict:
    """The object of ``kind`` named ``name`` (generated ones: ``name`` plus kustomize's hash)."""
    pattern = re.compile(re.escape(name) + r"(-[a-z0-9]{10})?")
    for d in docs:
        if d["kind"] == kind and pattern.fullmatch(d["metadata"]["name"]):
            return d
    raise AssertionError(f"no {kind} {name} in the rendered manifests")


def pod_spec(obj: dict) -> dict:
    spec = obj["spec"]
    return spec["template"]["spec"] if "template" in spec else spec["jobTemplate"]["spec"]["template"]["spec"]


def offline(command: list[str]) -> list[str]:
    """``command`` in a new network namespace (no network at all) where this machine allows it."""
    if os.geteuid() == 0 and shutil.which("unshare") and \
            subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0:
        return ["unshare", "-n", *command]
    return command
