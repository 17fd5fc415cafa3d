"""What a serving job reports (TTFT, latency, tokens/s, KV cache) and a training job's topology
reach the job page, `gpupool job` and the control plane's Prometheus metrics."""

from __future__ import annotations

import json

import httpx

from controlplane.cli.render import progress_rows
from tests.support.dashboard import sign_in
from tests.support.fake_agent import running_job
from tests.support.fixtures import server_fixture

server = server_fixture()
SERVING = {"ttft_ms": 41.5, "e2e_latency_ms": 812.0, "tokens_per_s": 97.3, "ms_per_output_token": 5.8,
           "kv_cache_usage": 0.25, "requests_running": 2, "requests_waiting": 1}


def test_serving_figures_on_the_job_page_and_in_prometheus(server) -> None:  # noqa: ANN001
    with server.client() as c:
        agent, job_id, attempt = running_job(server, c, {"kind": "inference", "name": "svc", "model_path": "/m"})
        agent.log(job_id, attempt, 0, f"GPUPOOL_PROGRESS {json.dumps(SERVING)}\n")
        assert c.get(f"/api/v1/jobs/{job_id}").json()["progress"]["ttft_ms"] == 41.5
        with httpx.Client(base_url=server.url, timeout=30) as browser:
            sign_in(browser, server.admin_token)
            page = browser.get(f"/jobs/{job_id}").text
        assert 'data-testid="job-serving"' in page and "42 ms" in page and "97.3" in page and "25%" in page
        metrics = httpx.get(f"{server.url}/metrics", timeout=30).text
        line = next(x for x in metrics.splitlines() if x.startswith("gpupool_serving_ttft_ms{"))
        assert f'job="{job_id}"' in line and 'team="default"' in line and line.endswith(" 41.5")
        assert any(x.startswith("gpupool_serving_kv_cache_usage_ratio{") and x.endswith(" 0.25")
                   for x in metrics.splitlines())
        c.post(f"/api/v1/jobs/{job_id}/cancel")
    agent.close()


def test_topology_and_serving_in_the_cli() -> None:
    rows = dict(progress_rows({"step": 3, "total": 10, "world_size": 4, "nodes": 2, "ranks_per_node": 2}))
    assert rows["topology"] == "4 ranks: 2 node(s) x 2 per node"
    serving = dict(progress_rows(SERVING))["serving"]
    assert "TTFT 41.5 ms" in serving and "97.3 tokens/s" in serving and "KV cache 25%" in serving
