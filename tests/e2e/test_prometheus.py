"""A real Prometheus (Debian package) scrapes a running control plane and agent on loopback.

It uses deploy/monitoring/prometheus.yml (targets and interval swapped for the test) and the real
alerts.yml; the key series are checked by PromQL over the HTTP API, and every PromQL expression of
the Grafana dashboards must return data.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
import yaml

from tests.e2e.helpers import REPO, wait_for
from tests.support.server import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]
MON = REPO / "deploy" / "monitoring"


def test_promtool_accepts_rules_and_config() -> None:
    if not shutil.which("promtool"):
        pytest.skip("promtool missing (Debian package prometheus; scripts/setup.sh installs it)")
    rules = subprocess.run(["promtool", "check", "rules", str(MON / "alerts.yml")],
                           capture_output=True, text=True)
    assert rules.returncode == 0, rules.stdout + rules.stderr
    config = subprocess.run(["promtool", "check", "config", str(MON / "prometheus.yml")],
                            capture_output=True, text=True)
    assert config.returncode == 0, config.stdout + config.stderr


def _dashboard_exprs() -> list[tuple[str, str, str]]:
    out = []
    for path in sorted((MON / "grafana" / "dashboards").glob("*.json")):
        dash = json.loads(path.read_text())
        for panel in dash["panels"]:
            for target in panel["targets"]:
                out.append((path.name, panel["title"], target["expr"]))
    return out


def _instantiate(expr: str) -> str:
    """Grafana variables -> what "All" means; $__rate_interval -> a window fitting 1 s scrapes."""
    expr = expr.replace("$__rate_interval", "30s")
    return re.sub(r"\$(model|team|queue|node)\b", ".*", expr)


class Prometheus:
    def __init__(self, tmp: Path, controlplane: str, agent: str) -> None:
        config = yaml.safe_load((MON / "prometheus.yml").read_text())
        config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
        config["rule_files"] = [str(MON / "alerts.yml")]
        for job in config["scrape_configs"]:
            job.pop("file_sd_configs", None)
            target = controlplane if job["job_name"] == "gpupool-controlplane" else agent
            job["static_configs"] = [{"targets": [target]}]
        (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(tmp / "prometheus.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            ["prometheus", f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

    def query(self, expr: str) -> list[dict]:
        r = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10)
        body = r.json()
        assert body.get("status") == "success", (expr, body)
        return body["data"]["result"]

    def value(self, expr: str) -> float | None:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


@pytest.fixture(scope="module")
def prometheus(cluster, tmp_path_factory):  # noqa: ANN001, ANN201
    if not shutil.which("prometheus"):
        pytest.skip("prometheus missing (Debian package prometheus; scripts/setup.sh installs it)")
    server, agent = cluster
    prom = Prometheus(tmp_path_factory.mktemp("prom"), server.url.removeprefix("http://"), agent.exporter)
    try:
        def ready() -> bool:
            try:
                return httpx.get(f"{prom.url}/-/ready", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False
        wait_for(ready, 30, "prometheus ready")
        yield prom
    finally:
        prom.stop()


def test_prometheus_scrapes_controlplane_and_agent(cluster, prometheus) -> None:  # noqa: ANN001
    server, agent = cluster
    prom = prometheus
    with httpx.Client(base_url=server.url, headers=server.headers(), timeout=30) as api:
        assert api.patch("/api/v1/queues/default", params={"team": "default"},
                         json={"guarantee_milli": 1000}).status_code == 200
        small = api.post("/api/v1/jobs", json={"name": "half", "command": ["sleep", "120"],
                                               "resources": {"gpu": 0.5}})
        big = api.post("/api/v1/jobs", json={"name": "too-big", "command": ["sleep", "1"],
                                             "resources": {"gpu": 8}})
        assert small.status_code == 201 and big.status_code == 201, (small.text, big.text)
        job_id = small.json()["id"]
        wait_for(lambda: api.get(f"/api/v1/jobs/{job_id}").json()["status"] == "running", 60,
                 "the half-GPU job running")

    wait_for(lambda: prom.value('count(up{job=~"gpupool-.*"} == 1)') == 2, 30, "both targets up")
    # control-plane series (DB-derived gauges, counters, histograms)
    checks = {
        'sum(gpupool_capacity_milli{vendor="nvidia", model="H100-80GB"})': 2000,
        'sum(gpupool_allocated_milli{model="H100-80GB"})': 500,
        'gpupool_queue_allocated_milli{team="default", queue="default"}': 500,
        'gpupool_queue_guarantee_milli{team="default", queue="default"}': 1000,
        'gpupool_queue_quota_used_ratio{team="default", queue="default"}': 0.5,
        'gpupool_jobs{state="running"}': 1,
        'sum(gpupool_pending_jobs{team="default", queue="default"})': 1,
        'gpupool_nodes{state="ready"}': 1,
        "gpupool_scheduler_leader_present": 1,
        "gpupool_database_up": 1,
        # agent series (DCGM names) and the slice of the running job, relabelled job -> job_id
        f'count(DCGM_FI_DEV_GPU_UTIL{{Hostname="{agent.name}"}})': 2,
        f'sum(gpupool_slice_compute_allocated_milli{{job_id="{job_id}"}})': 500,
    }
    def all_match() -> dict | None:
        got = {expr: prom.value(expr) for expr in checks}
        return None if any(got[e] is None or abs(got[e] - v) > 1e-6 for e, v in checks.items()) else got
    try:
        wait_for(all_match, 30, "the key series with the right values", interval=1.0)
    except AssertionError:
        got = {expr: prom.value(expr) for expr in checks}
        pytest.fail("wrong or missing series:\n" + "\n".join(
            f"  {e} = {got[e]} (want {v})" for e, v in checks.items() if got[e] != v))
    assert prom.value('sum(gpupool_pending_jobs{reason!="unknown"})') == 1  # the scheduler's reason
    assert prom.value("gpupool_scheduler_cycles_total") > 0
    assert prom.value("gpupool_scheduler_placements_total") >= 1
    assert prom.value('gpupool_job_transitions_total{to="running"}') >= 1
    assert prom.value('sum(gpupool_api_request_duration_seconds_count{route="/api/v1/jobs", method="POST"})') >= 2
    assert prom.value('count(gpupool_api_request_duration_seconds_bucket{route="/api/v1/jobs/{job_id}"})') > 0

    # the alert rules are loaded and evaluate without errors
    rules = httpx.get(f"{prom.url}/api/v1/rules", timeout=10).json()["data"]["groups"]
    loaded = [r for g in rules for r in g["rules"]]
    assert len(loaded) >= 10 and all(r["health"] in ("ok", "unknown") for r in loaded), loaded

    # every Grafana panel query returns data
    empty = []
    def dashboards_have_data() -> bool:
        empty.clear()
        empty.extend((d, t, e) for d, t, e in _dashboard_exprs() if not prom.query(_instantiate(e)))
        return not empty
    try:
        wait_for(dashboards_have_data, 30, "data for every dashboard query", interval=2.0)
    except AssertionError:
        pytest.fail("dashboard queries without data:\n" + "\n".join(f"  {d} / {t}: {e}" for d, t, e in empty))
