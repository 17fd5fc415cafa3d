"""The deploy files as files: the overlays render and validate strictly, offline, for Kubernetes
1.30 to 1.34; their safety settings hold; the generated monitoring objects are current; the
device-plugin component keeps the plugin off gpupool nodes; the systemd units verify."""

from __future__ import annotations

import configparser
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.deploy.manifests import (KUBE, KUBERNETES_VERSIONS, OVERLAYS, ROOT, copy_tree, find, offline,
                                    pod_spec, render, render_overlay, render_text)

VALIDATE = Path(sys.executable).parent / "kubernetes-validate"
CRD_KINDS = ("ServiceMonitor", "PrometheusRule")  # validated against their CRDs (test_deploy_crds)


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return copy_tree(tmp_path_factory.mktemp("kube"))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_validates_strictly_offline_for_kubernetes_1_30_to_1_34(overlay: str, tree: Path,
                                                                         tmp_path: Path) -> None:
    rendered = tmp_path / f"{overlay}.yaml"
    rendered.write_text(render_text(tree / "overlays" / overlay))
    for version in KUBERNETES_VERSIONS:
        # the schemas ship inside kubernetes-validate; no network namespace, no network
        result = subprocess.run(offline([str(VALIDATE), "--strict", "--quiet", "-k", version, str(rendered)]),
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, f"{overlay} on {version}:\n{result.stdout}{result.stderr}"
        for line in (result.stdout + result.stderr).splitlines():
            assert line.startswith("WARN") and any(f"kind {k} " in line for k in CRD_KINDS), line


def test_control_plane_pods_run_unprivileged_with_probes_and_resources(tree: Path) -> None:
    docs = render_overlay("quickstart", tree)
    server = find(docs, "Deployment", "gpupool-server")
    assert server["spec"]["replicas"] == 2
    pod = pod_spec(server)
    (c,) = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert c["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                    "capabilities": {"drop": ["ALL"]}}
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
    assert pod["affinity"]["podAntiAffinity"]
    assert pod["automountServiceAccountToken"] is False
    job = find(docs, "Job", "gpupool-db-upgrade")
    assert pod_spec(job)["containers"][0]["args"] == ["db", "upgrade"]
    assert find(docs, "PodDisruptionBudget", "gpupool-server")["spec"]["minAvailable"] == 1
    assert find(docs, "Namespace", "gpupool-system")
    # no Role grants gpupool's own ServiceAccounts anything: they read nothing from the API
    bound = [s["name"] for d in docs if d["kind"] in ("RoleBinding", "ClusterRoleBinding") for s in d["subjects"]]
    assert not {"gpupool-server", "gpupool-agent", "gpupool-migrate"} & set(bound)


def test_production_is_sized_up_and_verifies_the_database_certificate(tree: Path) -> None:
    docs = render_overlay("production", tree)
    server = find(docs, "Deployment", "gpupool-server")
    assert server["spec"]["replicas"] == 3
    assert find(docs, "PodDisruptionBudget", "gpupool-server")["spec"]["minAvailable"] == 2
    mounts = {m["mountPath"] for m in pod_spec(server)["containers"][0]["volumeMounts"]}
    url = find(docs, "Secret", "gpupool")["data"]["database-url"]
    import base64

    assert "sslmode=verify-full" in base64.b64decode(url).decode()
    assert "/etc/gpupool/db-ca" in mounts
    assert find(docs, "Secret", "gpupool-tls")["type"] == "kubernetes.io/tls"
    assert not any(d["kind"] == "StatefulSet" for d in docs)  # the database is external


def test_production_secrets_are_ignored_by_git() -> None:
    secrets = KUBE / "overlays" / "production" / "secrets"
    result = subprocess.run(["git", "-C", str(ROOT), "check-ignore", "-q", str(secrets / "database-url")])
    assert result.returncode == 0, "secrets/database-url would be committed"
    assert subprocess.run(["git", "-C", str(ROOT), "check-ignore", "-q", str(secrets / "README.md")]).returncode == 1


def test_generated_prometheus_rule_and_dashboards_are_current() -> None:
    spec = importlib.util.spec_from_file_location("kube_generate", KUBE / "generate.py")
    generate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generate)
    for name, make in generate.OUTPUTS.items():
        assert (KUBE / name).read_text() == generate.render(make()), \
            f"deploy/kubernetes/{name} is stale: run python deploy/kubernetes/generate.py"


def _node_matches(affinity: dict, labels: dict[str, str]) -> bool:
    """Whether required node affinity admits a node with ``labels`` (terms OR, expressions AND)."""
    ops = {"In": lambda v, vs: v in vs, "NotIn": lambda v, vs: v not in vs,
           "Exists": lambda v, vs: v is not None, "DoesNotExist": lambda v, vs: v is None}
    terms = affinity["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    return any(all(ops[e["operator"]](labels.get(e["key"]), e.get("values", [])) for e in t["matchExpressions"])
               for t in terms)


def test_device_plugin_component_keeps_the_plugin_off_gpupool_nodes() -> None:
    docs = render(ROOT / "tests" / "deploy" / "fixtures" / "device-plugin")
    (plugin,) = docs
    affinity = plugin["spec"]["template"]["spec"]["affinity"]
    gpu = {"nvidia.com/gpu.present": "true"}
    assert _node_matches(affinity, gpu)  # ordinary GPU nodes keep their device plugin
    assert not _node_matches(affinity, {**gpu, "gpupool.io/node": "true"})


def _unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read_string(path.read_text())
    return parser


@pytest.mark.parametrize("name", ["gpupool-server", "gpupool-agent"])
def test_systemd_units_verify(name: str, tmp_path: Path) -> None:
    unit = ROOT / "deploy" / "systemd" / f"{name}.service"
    parsed = _unit(unit)
    assert parsed["Install"]["WantedBy"] == "multi-user.target"
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze not installed; the unit was only parsed")
    text = unit.read_text().replace("/opt/gpupool/.venv/bin/python", sys.executable)
    text = text.replace("/opt/gpupool/.venv/bin/gpupool", str(Path(sys.executable).parent / "gpupool"))
    text = text.replace("EnvironmentFile=/etc/gpupool/", f"EnvironmentFile=-{tmp_path}/")
    copy = tmp_path / f"{name}.service"
    copy.write_text(text)
    result = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def _env_file(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if line and not line.startswith("#"))


def test_shipped_settings_are_ones_the_programs_know(tree: Path, tmp_path: Path) -> None:
    """The agent stops on an unknown GPUPOOL_AGENT_* name; the server ignores unknown names, so
    a typo there would silently do nothing: both are checked against the settings models."""
    from agent.config import load_config
    from controlplane.settings import Settings

    docs = render_overlay("quickstart", tree)
    ds = find(docs, "DaemonSet", "gpupool-agent")
    pod_env = dict(find(docs, "ConfigMap", "gpupool-agent")["data"])
    for e in pod_spec(ds)["containers"][0]["env"]:
        if e["name"].startswith("GPUPOOL_AGENT_"):
            pod_env[e["name"]] = e.get("value") or "from-" + next(iter(e["valueFrom"]))
    systemd_env = _env_file(ROOT / "deploy" / "systemd" / "agent.env.example")
    for environ in (pod_env, systemd_env):
        environ["GPUPOOL_AGENT_STATE_DIR"] = str(tmp_path)
        loaded = load_config(environ=environ)
        assert loaded.exporter_port == 9400 and loaded.backend == "nvml"
        assert loaded.server_url.endswith(":8080")
    known = {f"GPUPOOL_{name.upper()}" for name in Settings.model_fields}
    server_env = set(find(docs, "ConfigMap", "gpupool-server")["data"])
    server_env |= {e["name"] for e in pod_spec(find(docs, "Deployment", "gpupool-server"))["containers"][0]["env"]}
    server_env |= set(_env_file(ROOT / "deploy" / "systemd" / "server.env.example"))
    assert server_env <= known, server_env - known


def test_kustomizations_name_only_existing_files() -> None:
    for kustomization in KUBE.rglob("kustomization.yaml"):
        data = yaml.safe_load(kustomization.read_text())
        for entry in data.get("resources", []) + [p["path"] for p in data.get("patches", []) if "path" in p]:
            assert (kustomization.parent / entry).exists(), f"{kustomization}: {entry} missing"
