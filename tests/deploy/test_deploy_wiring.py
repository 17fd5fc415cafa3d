"""The rendered manifests fit together (tests/deploy/wiring.py says how), and a change of a port or
a name on one side only is caught: each mutation below edits one file of a copy of the tree."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.deploy.containers import AGENT_CAPABILITIES
from tests.deploy.manifests import KUBE, OVERLAYS, ROOT, copy_tree, find, pod_spec, render_overlay
from tests.deploy.wiring import wiring_problems

MONITORING = ROOT / "deploy" / "monitoring"


def _problems(docs: list[dict], prometheus: str | None = None, alerts: str | None = None) -> list[str]:
    return wiring_problems(docs, prometheus or (MONITORING / "prometheus.yml").read_text(),
                           (MONITORING / "targets" / "agents" / "agents.yml").read_text(),
                           alerts or (MONITORING / "alerts.yml").read_text())


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return copy_tree(tmp_path_factory.mktemp("kube"))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_names_ports_and_secrets_fit_together(overlay: str, tree: Path) -> None:
    docs = render_overlay(overlay, tree)
    assert _problems(docs) == []
    # and the pieces the check relies on are really there
    url = find(docs, "ConfigMap", "gpupool-agent")["data"]["GPUPOOL_AGENT_SERVER_URL"]
    assert url == "http://gpupool-server.gpupool-system.svc:8080"
    secret = find(docs, "Secret", "gpupool")
    assert {"database-url", "bootstrap-token", "admin-token"} <= set(secret["data"])


# (file in deploy/kubernetes, text, replacement, a phrase the problem list must contain)
ONE_SIDED = [
    pytest.param("base/server.yaml", "      port: 8080\n", "      port: 8000\n",
                 "Service gpupool-server has no port 8080", id="service-port"),
    pytest.param("base/agent.yaml", "gpupool-system.svc:8080", "gpupool-system.svc:8000",
                 "Service gpupool-server has no port 8000", id="agent-url-port"),
    pytest.param("base/agent.yaml", "http://gpupool-server.", "http://gpupool-api.",
                 "no Service gpupool-api", id="agent-url-service-name"),
    pytest.param("base/server.yaml", '"--port", "8080"]', '"--port", "9090"]',
                 "listens on 9090", id="server-listen-port"),
    pytest.param("base/server.yaml", "              containerPort: 8080",
                 "              containerPort: 8081", "listens on 8080", id="server-container-port"),
    pytest.param("base/agent.yaml", 'GPUPOOL_AGENT_EXPORTER_PORT: "9400"',
                 'GPUPOOL_AGENT_EXPORTER_PORT: "9500"', "listens on 9500", id="agent-exporter-port"),
    pytest.param("base/monitoring.yaml", "    - port: metrics\n", "    - port: prom\n",
                 "Service gpupool-agent-metrics has no port 'prom'", id="servicemonitor-port-name"),
    pytest.param("base/agent.yaml", "gpupool.io/scrape-job: gpupool-agent",
                 "gpupool.io/scrape-job: gpupool-agents", "which no alert rule watches", id="scrape-job-name"),
    pytest.param("base/agent.yaml", "                  key: bootstrap-token",
                 "                  key: bootstrap_token", "reads key 'bootstrap_token'", id="secret-key"),
    pytest.param("overlays/quickstart/kustomization.yaml", "- admin-token=", "- admin_token=",
                 None, id="optional-secret-key"),
    pytest.param("base/server.yaml", "  name: gpupool-server\ndata:", "  name: gpupool-settings\ndata:",
                 "reads ConfigMap gpupool-server", id="configmap-name"),
]


@pytest.mark.parametrize(("path", "old", "new", "expected"), ONE_SIDED)
def test_a_change_on_one_side_only_is_caught(path: str, old: str, new: str, expected: str | None,
                                             tmp_path: Path) -> None:
    tree = copy_tree(tmp_path)
    target = tree / path
    text = target.read_text()
    assert text.count(old) == 1, f"{old!r} should appear once in {path}"
    target.write_text(text.replace(old, new))
    problems = _problems(render_overlay("quickstart", tree))
    if expected is None:  # the admin token is optional: a pool runs without it
        assert problems == []
    else:
        assert any(expected in p for p in problems), problems


def test_prometheus_yml_and_alert_rules_are_held_to_the_same_ports_and_jobs(tree: Path) -> None:
    docs = render_overlay("quickstart", tree)
    prometheus = (MONITORING / "prometheus.yml").read_text()
    assert any("scrapes gpupool-server:8000" in p
               for p in _problems(docs, prometheus=prometheus.replace("gpupool-server:8080", "gpupool-server:8000")))
    alerts = (MONITORING / "alerts.yml").read_text().replace('job="gpupool-controlplane"', 'job="controlplane"')
    assert any("'gpupool-controlplane', which no alert rule watches" in p for p in _problems(docs, alerts=alerts))


def test_the_daemonset_grants_the_capabilities_the_container_pool_test_runs_with(tree: Path) -> None:
    ds = find(render_overlay("quickstart", tree), "DaemonSet", "gpupool-agent")
    (agent,) = pod_spec(ds)["containers"]
    caps = agent["securityContext"]["capabilities"]
    assert caps["drop"] == ["ALL"] and tuple(sorted(caps["add"])) == AGENT_CAPABILITIES


def test_the_device_plugin_exclusion_uses_the_label_the_agent_selects(tree: Path) -> None:
    ds = find(render_overlay("quickstart", tree), "DaemonSet", "gpupool-agent")
    ((key, value),) = pod_spec(ds)["nodeSelector"].items()
    patch = (KUBE / "components" / "nvidia-device-plugin-exclusion" / "affinity.yaml").read_text()
    assert f"key: {key}" in patch and f'values: ["{value}"]' in patch and "operator: NotIn" in patch
