"""Deploy artefacts of the agent: Kubernetes manifests validate offline, the systemd unit verifies."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
KUBE = ROOT / "deploy" / "kubernetes"
VALIDATE = Path(sys.executable).parent / "kubernetes-validate"


def _manifests() -> list[Path]:
    return sorted(p for p in KUBE.rglob("*.y*ml") if p.suffix in (".yaml", ".yml"))


def test_every_kubernetes_manifest_validates_strictly_offline():
    files = _manifests()
    assert files, "no manifests under deploy/kubernetes"
    # The schemas ship inside the kubernetes-validate package: no network is used.
    result = subprocess.run([str(VALIDATE), "--strict", *map(str, files)], capture_output=True,
                            text=True, timeout=120)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    for line in out.splitlines():
        if line.startswith("WARN"):
            # Only kustomize's own files lack a Kubernetes schema.
            assert "Kustomization" in line, line


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def test_agent_daemonset_has_what_a_gpu_node_agent_needs():
    (ds,) = [d for d in _docs(KUBE / "agent" / "daemonset.yaml") if d["kind"] == "DaemonSet"]
    pod = ds["spec"]["template"]["spec"]
    (agent,) = pod["containers"]
    assert pod["hostPID"] is True
    assert agent["securityContext"]["privileged"] is True
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    token = [e for e in agent["env"] if e["name"] == "GPUPOOL_AGENT_TOKEN"][0]
    assert token["valueFrom"]["secretKeyRef"]["name"] == "gpupool-agent-token"
    assert agent["ports"] == [{"name": "metrics", "containerPort": 9400, "protocol": "TCP"}]
    assert agent["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}


def test_kustomization_lists_existing_files():
    for kustomization in KUBE.rglob("kustomization.yaml"):
        for resource in yaml.safe_load(kustomization.read_text()).get("resources", []):
            assert (kustomization.parent / resource).exists(), f"{kustomization}: {resource} missing"


def test_systemd_unit_and_env_example(tmp_path):
    unit = ROOT / "deploy" / "systemd" / "gpupool-agent.service"
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read_string(unit.read_text())
    assert parser["Service"]["ExecStart"].endswith("-m agent")
    assert parser["Service"]["EnvironmentFile"] == "/etc/gpupool/agent.env"
    assert parser["Install"]["WantedBy"] == "multi-user.target"
    env = (ROOT / "deploy" / "systemd" / "agent.env.example").read_text()
    keys = {line.split("=", 1)[0] for line in env.splitlines() if line and not line.startswith("#")}
    assert {"GPUPOOL_AGENT_SERVER_URL", "GPUPOOL_AGENT_TOKEN", "GPUPOOL_AGENT_BACKEND"} <= keys
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze not installed; the unit was only parsed")
    # Verify a copy whose interpreter and env file exist on this machine.
    text = unit.read_text().replace("/opt/gpupool/.venv/bin/python", sys.executable)
    text = text.replace("EnvironmentFile=/etc/gpupool/agent.env", f"EnvironmentFile=-{tmp_path}/agent.env")
    copy = tmp_path / "gpupool-agent.service"
    copy.write_text(text)
    result = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr


def test_deploy_files_use_only_settings_the_agent_knows(tmp_path):
    """The agent stops on an unknown GPUPOOL_AGENT_* variable, so every one we ship must load."""
    config = pytest.importorskip("agent.config")
    env_example = (ROOT / "deploy" / "systemd" / "agent.env.example").read_text()
    systemd_env = dict(line.split("=", 1) for line in env_example.splitlines()
                       if line and not line.startswith("#"))
    (cm,) = _docs(KUBE / "agent" / "configmap.yaml")
    (ds,) = _docs(KUBE / "agent" / "daemonset.yaml")
    pod_env = dict(cm["data"])
    for e in ds["spec"]["template"]["spec"]["containers"][0]["env"]:
        pod_env[e["name"]] = e["value"] if "value" in e else "from-" + next(iter(e["valueFrom"]))
    for environ in (systemd_env, pod_env):
        assert {"GPUPOOL_AGENT_SERVER_URL", "GPUPOOL_AGENT_TOKEN", "GPUPOOL_AGENT_BACKEND"} <= set(environ)
        environ["GPUPOOL_AGENT_STATE_DIR"] = str(tmp_path)
        loaded = config.load_config(environ=environ)  # ConfigError names any unknown setting
        assert loaded.exporter_port == 9400 and loaded.backend == "nvml"
    assert config.load_config(environ=pod_env).node_name == "from-fieldRef"
