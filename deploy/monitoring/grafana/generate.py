"""Generates the Grafana provisioning dashboards (JSON committed beside it): python deploy/monitoring/grafana/generate.py

Every PromQL expression here is evaluated against a real Prometheus by tests/e2e/test_prometheus.py.
"""
import json, pathlib
OUT = pathlib.Path(__file__).resolve().parent / "dashboards"
DS = {"type": "prometheus", "uid": "gpupool-prometheus"}

def var(name, query, label, multi=True):
    return {"name": name, "label": label, "type": "query", "datasource": DS, "query": {"query": query, "refId": name},
            "definition": query, "refresh": 2, "includeAll": True, "multi": multi, "allValue": ".*",
            "current": {"selected": True, "text": "All", "value": "$__all"}}

def panel(pid, title, kind, exprs, x, y, w, h, unit=None, legend=None, stack=False, thresholds=None):
    targets = [{"refId": chr(65 + i), "expr": e, "legendFormat": (legend[i] if legend else ""), "datasource": DS}
               for i, e in enumerate(exprs)]
    p = {"id": pid, "title": title, "type": kind, "datasource": DS, "gridPos": {"x": x, "y": y, "w": w, "h": h},
         "targets": targets, "fieldConfig": {"defaults": {}, "overrides": []}, "options": {}}
    if unit: p["fieldConfig"]["defaults"]["unit"] = unit
    if kind == "timeseries":
        p["fieldConfig"]["defaults"]["custom"] = {"lineWidth": 2, "fillOpacity": 10,
                                                  "stacking": {"mode": "normal" if stack else "none"}}
        p["options"] = {"legend": {"displayMode": "table", "placement": "bottom", "calcs": ["lastNotNull", "max"]},
                        "tooltip": {"mode": "multi"}}
    if kind == "stat":
        p["options"] = {"reduceOptions": {"calcs": ["lastNotNull"]}, "colorMode": "value", "graphMode": "area"}
        if thresholds:
            p["fieldConfig"]["defaults"]["thresholds"] = {"mode": "absolute", "steps": thresholds}
    return p

def dash(uid, title, panels, variables, tags):
    return {"uid": uid, "title": title, "tags": ["gpupool"] + tags, "timezone": "browser", "schemaVersion": 39,
            "version": 1, "refresh": "30s", "time": {"from": "now-6h", "to": "now"}, "editable": True,
            "templating": {"list": variables}, "annotations": {"list": []}, "panels": panels}

M = 'model=~"$model"'
cluster = dash("gpupool-cluster", "gpupool / Cluster capacity and utilisation", [
    panel(1, "GPUs (capacity)", "stat", [f"sum(gpupool_capacity_milli{{{M}}}) / 1000"], 0, 0, 4, 4),
    panel(2, "GPUs allocated", "stat", [f"sum(gpupool_allocated_milli{{{M}}}) / 1000"], 4, 0, 4, 4),
    panel(3, "Allocation", "stat", [f"sum(gpupool_allocated_milli{{{M}}}) / sum(gpupool_capacity_milli{{{M}}})"], 8, 0, 4, 4, unit="percentunit"),
    panel(4, "Mean GPU utilisation", "stat", ["avg(DCGM_FI_DEV_GPU_UTIL) / 100"], 12, 0, 4, 4, unit="percentunit"),
    panel(5, "Pending jobs", "stat", ['sum(gpupool_jobs{state="pending"})'], 16, 0, 4, 4),
    panel(6, "Nodes ready", "stat", ['sum(gpupool_nodes{state="ready"})', "sum(gpupool_nodes)"], 20, 0, 4, 4, legend=["ready", "total"]),
    panel(7, "Capacity, allocation and use by model (GPUs)", "timeseries",
          [f"sum by (model) (gpupool_capacity_milli{{{M}}}) / 1000",
           f"sum by (model) (gpupool_allocated_milli{{{M}}}) / 1000",
           f"sum by (model) (gpupool_gpu_utilization_ratio{{{M}}} * gpupool_capacity_milli{{{M}}}) / 1000"],
          0, 4, 12, 9, legend=["{{model}} capacity", "{{model}} allocated", "{{model}} in use"]),
    panel(8, "GPU memory allocated vs capacity (bytes)", "timeseries",
          [f"sum by (model) (gpupool_allocated_memory_mib{{{M}}}) * 1048576",
           f"sum by (model) (gpupool_capacity_memory_mib{{{M}}}) * 1048576"],
          12, 4, 12, 9, unit="bytes", legend=["{{model}} allocated", "{{model}} capacity"]),
    panel(9, "Pending jobs by reason", "timeseries", ["sum by (reason) (gpupool_pending_jobs)"], 0, 13, 12, 8,
          legend=["{{reason}}"], stack=True),
    panel(10, "Scheduling cycle duration (p50 / p99)", "timeseries",
          ["histogram_quantile(0.5, sum by (le) (rate(gpupool_scheduler_cycle_duration_seconds_bucket[$__rate_interval])))",
           "histogram_quantile(0.99, sum by (le) (rate(gpupool_scheduler_cycle_duration_seconds_bucket[$__rate_interval])))"],
          12, 13, 12, 8, unit="s", legend=["p50", "p99"]),
    panel(11, "Placements and job transitions per minute", "timeseries",
          ["sum(rate(gpupool_scheduler_placements_total[$__rate_interval])) * 60",
           "sum by (to) (rate(gpupool_job_transitions_total[$__rate_interval])) * 60"],
          0, 21, 12, 8, legend=["placements", "→ {{to}}"]),
    panel(12, "API latency p99 by route", "timeseries",
          ["histogram_quantile(0.99, sum by (le, route) (rate(gpupool_api_request_duration_seconds_bucket[$__rate_interval])))"],
          12, 21, 12, 8, unit="s", legend=["{{route}}"]),
    panel(13, "Fragmentation: unhealthy accelerators by model", "timeseries",
          [f"sum by (model) (gpupool_accelerators_unhealthy{{{M}}})"], 0, 29, 12, 6, legend=["{{model}}"]),
    panel(14, "Scheduler leader present", "stat", ["max(gpupool_scheduler_leader_present)"], 12, 29, 12, 6,
          thresholds=[{"color": "red", "value": None}, {"color": "green", "value": 1}]),
], [var("model", "label_values(gpupool_capacity_milli, model)", "Model")], ["cluster"])

Q = 'team=~"$team", queue=~"$queue"'
queues = dash("gpupool-queues", "gpupool / Queues and quotas", [
    panel(1, "Allocation vs guarantee (GPUs)", "timeseries",
          [f"sum by (team, queue) (gpupool_queue_allocated_milli{{{Q}}}) / 1000",
           f"sum by (team, queue) (gpupool_queue_guarantee_milli{{{Q}}}) / 1000"],
          0, 0, 12, 9, legend=["{{team}}/{{queue}} allocated", "{{team}}/{{queue}} guarantee"]),
    panel(2, "Quota use (allocated / guarantee)", "timeseries",
          [f"gpupool_queue_quota_used_ratio{{{Q}}}"], 12, 0, 12, 9, unit="percentunit", legend=["{{team}}/{{queue}}"]),
    panel(3, "Borrowed above guarantee (GPUs)", "timeseries",
          [f"gpupool_queue_borrowed_milli{{{Q}}} / 1000"], 0, 9, 12, 8, legend=["{{team}}/{{queue}}"], stack=True),
    panel(4, "Pending jobs by queue and reason", "timeseries",
          [f"sum by (team, queue, reason) (gpupool_pending_jobs{{{Q}}})"], 12, 9, 12, 8,
          legend=["{{team}}/{{queue}} {{reason}}"], stack=True),
    panel(5, "Oldest pending job age", "timeseries",
          [f"gpupool_queue_oldest_pending_age_seconds{{{Q}}}"], 0, 17, 12, 8, unit="s", legend=["{{team}}/{{queue}}"]),
    panel(6, "Running jobs", "timeseries", [f"gpupool_queue_running_jobs{{{Q}}}"], 12, 17, 12, 8,
          legend=["{{team}}/{{queue}}"], stack=True),
], [var("team", "label_values(gpupool_queue_guarantee_milli, team)", "Team"),
    var("queue", 'label_values(gpupool_queue_guarantee_milli{team=~"$team"}, queue)', "Queue")], ["queues"])

N = 'Hostname=~"$node"'
nodes = dash("gpupool-node-gpus", "gpupool / Node GPUs", [
    panel(1, "GPU utilisation", "timeseries", [f"DCGM_FI_DEV_GPU_UTIL{{{N}}}"], 0, 0, 12, 8, unit="percent",
          legend=["{{Hostname}} GPU {{gpu}}"]),
    panel(2, "GPU memory used (bytes)", "timeseries", [f"DCGM_FI_DEV_FB_USED{{{N}}} * 1048576"], 12, 0, 12, 8,
          unit="bytes", legend=["{{Hostname}} GPU {{gpu}}"]),
    panel(3, "Slices: memory used vs allocated (bytes)", "timeseries",
          [f"gpupool_slice_memory_used_mib{{{N}}} * 1048576", f"gpupool_slice_memory_allocated_mib{{{N}}} * 1048576"],
          0, 8, 12, 8, unit="bytes", legend=["job {{job_id}} GPU {{gpu}} used", "job {{job_id}} GPU {{gpu}} allocated"]),
    panel(4, "Slices: SM utilisation of their allocation", "timeseries",
          [f"gpupool_slice_sm_util_of_allocation_pct{{{N}}}"], 12, 8, 12, 8, unit="percent",
          legend=["job {{job_id}} GPU {{gpu}}"]),
    panel(5, "Power (W)", "timeseries", [f"DCGM_FI_DEV_POWER_USAGE{{{N}}}"], 0, 16, 8, 7, unit="watt",
          legend=["{{Hostname}} GPU {{gpu}}"]),
    panel(6, "Temperature (°C)", "timeseries", [f"DCGM_FI_DEV_GPU_TEMP{{{N}}}"], 8, 16, 8, 7, unit="celsius",
          legend=["{{Hostname}} GPU {{gpu}}"]),
    panel(7, "SM clock (MHz)", "timeseries", [f"DCGM_FI_DEV_SM_CLOCK{{{N}}}"], 16, 16, 8, 7,
          legend=["{{Hostname}} GPU {{gpu}}"]),
    panel(8, "Health, XID and ECC", "timeseries",
          [f"gpupool_gpu_healthy{{{N}}}", f"DCGM_FI_DEV_XID_ERRORS{{{N}}}", f"DCGM_FI_DEV_ECC_DBE_VOL_TOTAL{{{N}}}"],
          0, 23, 24, 7, legend=["healthy GPU {{gpu}}", "last XID GPU {{gpu}}", "ECC DBE GPU {{gpu}}"]),
], [var("node", "label_values(DCGM_FI_DEV_GPU_UTIL, Hostname)", "Node")], ["nodes"])

for name, d in [("cluster.json", cluster), ("queues.json", queues), ("node-gpus.json", nodes)]:
    (OUT / name).write_text(json.dumps(d, indent=2) + "\n")
print("ok")
