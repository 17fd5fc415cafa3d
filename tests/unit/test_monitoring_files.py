"""deploy/monitoring files are consistent without any binary: rules annotated, dashboards sound,
the generator reproduces the committed JSON, and every metric they use is one we export."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import yaml

MON = Path(__file__).resolve().parents[2] / "deploy" / "monitoring"


def _metric_names(expr: str) -> set[str]:
    names = set(re.findall(r"\b([A-Za-z_:][A-Za-z0-9_:]*)\s*(?:\{|\[|\)|$|\s[<>!=])", expr))
    return {n for n in names if n.startswith(("gpupool_", "DCGM_")) or n == "up"}


def test_every_alert_has_severity_summary_and_description() -> None:
    rules = yaml.safe_load((MON / "alerts.yml").read_text())
    alerts = [r for g in rules["groups"] for r in g["rules"]]
    names = {a["alert"] for a in alerts}
    for needed in ("GpupoolNodeNotHeartbeating", "GpupoolGpuXidError", "GpupoolGpuEccErrors",
                   "GpupoolSliceOverMemoryLimit", "GpupoolQueueStarving", "GpupoolNoSchedulerLeader"):
        assert needed in names
    for a in alerts:
        assert a["labels"]["severity"] in ("warning", "critical"), a["alert"]
        assert a["annotations"]["summary"] and a["annotations"]["description"], a["alert"]
        assert _metric_names(a["expr"]), a["alert"]


def test_dashboards_are_well_formed_and_use_the_provisioned_datasource() -> None:
    ds = yaml.safe_load((MON / "grafana/provisioning/datasources/prometheus.yml").read_text())
    uid = ds["datasources"][0]["uid"]
    uids = set()
    for path in sorted((MON / "grafana/dashboards").glob("*.json")):
        dash = json.loads(path.read_text())
        assert dash["uid"] not in uids
        uids.add(dash["uid"])
        ids = [p["id"] for p in dash["panels"]]
        assert len(ids) == len(set(ids)), path.name
        for panel in dash["panels"]:
            assert panel["datasource"]["uid"] == uid
            for t in panel["targets"]:
                assert _metric_names(t["expr"]), (path.name, t["expr"])
                used_vars = set(re.findall(r"\$(\w+)", t["expr"])) - {"__rate_interval"}
                defined = {v["name"] for v in dash["templating"]["list"]}
                assert used_vars <= defined, (path.name, used_vars - defined)
    assert len(uids) == 3


def test_generator_reproduces_the_committed_dashboards(tmp_path) -> None:  # noqa: ANN001
    before = {p.name: p.read_text() for p in (MON / "grafana/dashboards").glob("*.json")}
    subprocess.run([sys.executable, str(MON / "grafana/generate.py")], check=True, capture_output=True)
    after = {p.name: p.read_text() for p in (MON / "grafana/dashboards").glob("*.json")}
    assert before == after, "edit deploy/monitoring/grafana/generate.py and rerun it"


def test_control_plane_metric_names_in_configs_exist() -> None:
    """Every gpupool_ name the rules and dashboards use is exported by the control plane or agent."""
    source = "".join(p.read_text() for p in [
        *Path(MON.parents[1], "controlplane").glob("metrics*.py"),
        Path(MON.parents[1], "agent", "exporter.py")])
    used = set()
    for a in yaml.safe_load((MON / "alerts.yml").read_text())["groups"]:
        for r in a["rules"]:
            used |= _metric_names(r["expr"])
    for path in (MON / "grafana/dashboards").glob("*.json"):
        for p in json.loads(path.read_text())["panels"]:
            for t in p["targets"]:
                used |= _metric_names(t["expr"])
    for name in sorted(n for n in used if n.startswith("gpupool_")):
        base = re.sub(r"_(total|bucket|count|sum)$", "", name)
        assert f'"{base}"' in source or f'"{name}"' in source, name
