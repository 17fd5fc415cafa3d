"""Time charts in Chromium: with a few minutes (here seconds) of data every chart's x-axis labels are
times of today, never years (the overview after `gpupool up` once drew 2027 to 2029); the job
page draws the job's usage; the Usage & chargeback page draws its chart and downloads its CSV.

The e2e ``cluster``: a real server (PostgreSQL; history every second, usage buckets of one second)
and a real agent on simulated GPUs; Debian's Chromium in the UTC time zone. Screenshots land in
test-artifacts/.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

import httpx
import pytest

from tests.e2e.helpers import shot, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]
# uPlot's labels of a span of minutes: "11:35pm", the first with the date ("11:35pm\n12/1/26")
TIME_LABEL = re.compile(r"^(\d{1,2}:\d{2}(am|pm)|:\d{2})(\n(\d{1,2}/\d{1,2}/\d{2}|\d{1,2}:\d{2}(am|pm)))?$")


def _chart(page, selector: str) -> tuple[dict, list[str]]:  # noqa: ANN001
    """The chart's data and the x-axis labels uPlot drew (kept by app.js in data-x-labels)."""
    el = page.locator(selector)
    source = el.get_attribute("data-source")
    spec = json.loads(page.locator(f"#{source}").text_content())
    page.wait_for_function("el => el.dataset.xLabels !== undefined", arg=el.element_handle(), timeout=10_000)
    return spec, json.loads(el.get_attribute("data-x-labels"))


def _assert_times_of_today(labels: list[str], where: str) -> None:
    assert labels, where
    today = datetime.now(UTC)
    for label in labels:
        assert TIME_LABEL.match(label), (where, labels)
        date = re.search(r"(\d{1,2})/(\d{1,2})/(\d{2})", label)
        if date:
            assert (int(date[1]), int(date[2]), 2000 + int(date[3])) == (today.month, today.day, today.year), labels


def test_time_axes_show_minutes_of_today(cluster, browser) -> None:  # noqa: ANN001
    server, _ = cluster  # a fresh server for this module
    api = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.admin_token}"}, timeout=30)
    job = api.post("/api/v1/jobs", json={"name": "busy", "command": ["sleep", "300"],
                                         "resources": {"gpu": 0.5}}).json()
    wait_for(lambda: len([p for s in api.get(f"/api/v1/jobs/{job['id']}/usage").json()["slices"]
                          for p in s["points"]]) >= 3, 60, "three seconds of the job's usage stored")

    ctx = browser.new_context(viewport={"width": 1440, "height": 900}, timezone_id="UTC", locale="en-US")
    page = ctx.new_page()
    page.goto(f"{server.url}/login")
    page.fill("#token", server.admin_token)
    page.click("button[type=submit]")
    page.wait_for_url(f"{server.url}/")

    def overview_has_history() -> bool:
        page.goto(f"{server.url}/")
        return bool(json.loads(page.locator("#chart-cluster").text_content()).get("ts"))
    wait_for(overview_has_history, 30, "history samples on the overview", interval=1.0)
    spec, labels = _chart(page, "[data-source=chart-cluster]")
    assert max(spec["ts"]) - min(spec["ts"]) < 600  # seconds of history, as right after `gpupool up`
    _assert_times_of_today(labels, "overview")
    shot(page, "overview-fresh-axes")

    page.goto(f"{server.url}/jobs/{job['id']}")
    for chart in ("[data-testid=job-usage-compute]", "[data-testid=job-usage-memory]"):
        spec, labels = _chart(page, chart)
        assert spec["ts"], chart
        _assert_times_of_today(labels, chart)
    assert "minute(s) of usage so far" in page.inner_text("[data-testid=job-rightsizing]")
    shot(page, "job-usage")

    page.goto(f"{server.url}/reports/usage")
    assert "default" in page.inner_text("[data-testid=usage-table]")
    spec, labels = _chart(page, "[data-testid=usage-report-chart]")
    assert spec["ts"]
    _assert_times_of_today(labels, "usage report")
    shot(page, "usage-report")
    with page.expect_download() as download:
        page.click("[data-testid=usage-csv]")
    text = open(download.value.path()).read()
    assert text.splitlines()[0].startswith("team,jobs,allocated_gpu_hours") and "\ndefault," in text
    api.post(f"/api/v1/jobs/{job['id']}/cancel")
    ctx.close()
    api.close()
