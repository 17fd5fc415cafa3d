"""Checks that the names and ports of rendered manifests fit together; returns what does not.

- the agent's server URL names a Service, a port of it, and through its targetPort a container
  port on which the server really listens (`--port` of its command);
- each ServiceMonitor endpoint names a port of the Services it selects, which reaches the port the
  component serves /metrics on; its job label is the `job` the alert rules and prometheus.yml use;
- prometheus.yml's static and file targets use those same ports;
- every Secret and ConfigMap (and key) a pod reads exists in the render.
"""

from __future__ import annotations

import re
from urllib.parse import urlparse

import yaml

WORKLOADS = ("Deployment", "DaemonSet", "StatefulSet", "Job")


def _pods(docs: list[dict]) -> list[tuple[dict, dict]]:
    """(workload, pod spec) of every workload in the render."""
    return [(d, d["spec"]["template"]["spec"]) for d in docs if d["kind"] in WORKLOADS]


def _named(docs: list[dict], kind: str, name: str, namespace: str | None = None) -> dict | None:
    for d in docs:
        meta = d["metadata"]
        if d["kind"] == kind and meta["name"] == name and (namespace is None or meta.get("namespace") == namespace):
            return d
    return None


def _selected(docs: list[dict], service: dict) -> list[tuple[dict, dict]]:
    selector = service["spec"].get("selector") or {}
    ns = service["metadata"].get("namespace")
    return [(w, p) for w, p in _pods(docs) if w["metadata"].get("namespace") == ns and selector
            and selector.items() <= w["spec"]["template"]["metadata"].get("labels", {}).items()]


def _env(container: dict, configmaps: dict[str, dict]) -> dict[str, str]:
    env = {}
    for src in container.get("envFrom", []):
        if "configMapRef" in src:
            env.update((configmaps.get(src["configMapRef"]["name"]) or {}).get("data", {}))
    for e in container.get("env", []):
        env[e["name"]] = e.get("value", "")
    return env


def _listen_port(container: dict, env: dict[str, str]) -> int | None:
    """The port the container's process listens on, from its command line or its environment."""
    argv = [*container.get("command", []), *container.get("args", [])]
    if "--port" in argv:
        return int(argv[argv.index("--port") + 1])
    if "GPUPOOL_AGENT_EXPORTER_PORT" in env:
        return int(env["GPUPOOL_AGENT_EXPORTER_PORT"])
    return None


def _target(service: dict, port_name_or_number: str | int, docs: list[dict],
            configmaps: dict[str, dict]) -> tuple[list[str], list[int]]:
    """(problems, listening ports) behind one Service port, given by its name or number."""
    problems, listening = [], []
    svc = service["metadata"]["name"]
    ports = [p for p in service["spec"].get("ports", [])
             if port_name_or_number in (p.get("name"), p.get("port"))]
    if not ports:
        return [f"Service {svc} has no port {port_name_or_number!r}"], []
    target = ports[0].get("targetPort", ports[0]["port"])
    pods = _selected(docs, service)
    if not pods:
        problems.append(f"Service {svc} selects no pods")
    for workload, pod in pods:
        for c in pod["containers"]:
            match = [p for p in c.get("ports", []) if target in (p.get("name"), p["containerPort"])]
            if not match:
                problems.append(f"Service {svc} targetPort {target!r} is no port of "
                                f"{workload['kind']} {workload['metadata']['name']}/{c['name']}")
                continue
            port = match[0]["containerPort"]
            actual = _listen_port(c, _env(c, configmaps))
            if actual is not None and actual != port:
                problems.append(f"{workload['metadata']['name']}/{c['name']} listens on {actual}, "
                                f"but its port {target!r} (Service {svc}) is {port}")
            listening.append(port)
    return problems, listening


def _server_url(docs: list[dict], configmaps: dict[str, dict]) -> list[str]:
    problems = []
    for workload, pod in _pods(docs):
        for c in pod["containers"]:
            url = _env(c, configmaps).get("GPUPOOL_AGENT_SERVER_URL")
            if not url:
                continue
            u = urlparse(url)
            host = u.hostname or ""
            parts = host.split(".")
            if len(parts) < 3 or parts[2] != "svc":
                problems.append(f"agent server URL {url} is not <service>.<namespace>.svc")
                continue
            service = _named(docs, "Service", parts[0], parts[1])
            if service is None:
                problems.append(f"agent server URL {url}: no Service {parts[0]} in namespace {parts[1]}")
                continue
            found, _ = _target(service, u.port or (443 if u.scheme == "https" else 80), docs, configmaps)
            problems += [f"agent server URL {url}: {p}" for p in found]
            if pod.get("hostNetwork") and pod.get("dnsPolicy") != "ClusterFirstWithHostNet":
                problems.append(f"{workload['metadata']['name']} uses the host network without "
                                "dnsPolicy ClusterFirstWithHostNet: the Service name will not resolve")
    return problems


def _alert_jobs(rules: dict) -> set[str]:
    jobs = set()
    for group in rules["groups"]:
        for rule in group["rules"]:
            jobs |= set(re.findall(r'job="([^"]+)"', rule["expr"]))
    return jobs


def _monitors(docs: list[dict], configmaps: dict[str, dict], alert_jobs: set[str]) -> tuple[list[str], dict[str, int]]:
    """Problems of the ServiceMonitors, and {scrape job: metrics port} they reach."""
    problems, ports = [], {}
    for mon in (d for d in docs if d["kind"] == "ServiceMonitor"):
        name, spec = mon["metadata"]["name"], mon["spec"]
        namespaces = spec.get("namespaceSelector", {}).get("matchNames") or [mon["metadata"].get("namespace")]
        services = [d for d in docs if d["kind"] == "Service" and d["metadata"].get("namespace") in namespaces
                    and spec["selector"]["matchLabels"].items() <= d["metadata"].get("labels", {}).items()]
        if not services:
            problems.append(f"ServiceMonitor {name} selects no Service")
        for svc in services:
            job = svc["metadata"].get("labels", {}).get(spec.get("jobLabel", ""), svc["metadata"]["name"])
            if job not in alert_jobs:
                problems.append(f"ServiceMonitor {name} scrapes job {job!r}, which no alert rule watches "
                                f"(they use {sorted(alert_jobs)})")
            for endpoint in spec["endpoints"]:
                found, listening = _target(svc, endpoint["port"], docs, configmaps)
                problems += [f"ServiceMonitor {name}: {p}" for p in found]
                for port in listening:
                    ports[job] = port
    return problems, ports


def _prometheus(prometheus_yml: dict, agent_targets: list[dict], ports: dict[str, int]) -> list[str]:
    problems = []
    jobs = {j["job_name"]: j for j in prometheus_yml["scrape_configs"]}
    for job, port in ports.items():
        if job not in jobs:
            problems.append(f"prometheus.yml has no scrape job {job!r}")
            continue
        targets = [t for sc in jobs[job].get("static_configs", []) for t in sc["targets"]]
        if jobs[job].get("file_sd_configs"):
            targets += [t for group in agent_targets for t in group["targets"]]
        for t in targets:
            if int(t.rsplit(":", 1)[1]) != port:
                problems.append(f"prometheus.yml job {job} scrapes {t}, but the metrics port is {port}")
    return problems


def _references(docs: list[dict]) -> list[str]:
    """Every Secret/ConfigMap (and key) a pod reads exists (optional references excepted)."""
    problems = []
    objects = {(d["kind"], d["metadata"]["name"]): d for d in docs if d["kind"] in ("Secret", "ConfigMap")}

    def keys(kind: str, name: str) -> set[str] | None:
        obj = objects.get((kind, name))
        return None if obj is None else set(obj.get("data", {})) | set(obj.get("stringData", {}))

    for workload, pod in _pods(docs):
        where = f"{workload['kind']} {workload['metadata']['name']}"
        for c in pod["containers"] + pod.get("initContainers", []):
            for e in c.get("env", []):
                for kind, ref in (("Secret", e.get("valueFrom", {}).get("secretKeyRef")),
                                  ("ConfigMap", e.get("valueFrom", {}).get("configMapKeyRef"))):
                    if ref and not ref.get("optional"):
                        have = keys(kind, ref["name"])
                        if have is None or ref["key"] not in have:
                            problems.append(f"{where} reads key {ref['key']!r} of {kind} {ref['name']}, "
                                            "which the render does not have")
            for src in c.get("envFrom", []):
                for kind, field in (("Secret", "secretRef"), ("ConfigMap", "configMapRef")):
                    ref = src.get(field)
                    if ref and not ref.get("optional") and keys(kind, ref["name"]) is None:
                        problems.append(f"{where} reads {kind} {ref['name']}, which the render does not have")
        for v in pod.get("volumes", []):
            if "secret" in v and keys("Secret", v["secret"]["secretName"]) is None:
                problems.append(f"{where} mounts Secret {v['secret']['secretName']}, which the render does not have")
    for d in docs:  # an Ingress' TLS Secret
        for tls in d["spec"].get("tls", []) if d["kind"] == "Ingress" else []:
            if keys("Secret", tls["secretName"]) is None:
                problems.append(f"Ingress {d['metadata']['name']} uses Secret {tls['secretName']}, "
                                "which the render does not have")
    return problems


def wiring_problems(docs: list[dict], prometheus_yml: str, agent_targets: str, alerts_yml: str) -> list[str]:
    """Everything that does not fit together in one render (empty when all of it does)."""
    configmaps = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ConfigMap"}
    alert_jobs = _alert_jobs(yaml.safe_load(alerts_yml))
    monitor_problems, ports = _monitors(docs, configmaps, alert_jobs)
    return (_server_url(docs, configmaps) + monitor_problems
            + _prometheus(yaml.safe_load(prometheus_yml), yaml.safe_load(agent_targets), ports)
            + _references(docs))
