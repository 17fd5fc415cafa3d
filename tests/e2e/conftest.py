"""Fixtures for the dashboard and monitoring end-to-end tests: a real server on PostgreSQL, a real
agent on simulated GPUs, and Debian's Chromium driven by Playwright (never `playwright install`)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.e2e.helpers import Agent
from tests.support.db import postgres_available, postgres_database
from tests.support.server import start_server

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def pg_url():  # noqa: ANN201
    why = postgres_available()
    if why:
        if os.environ.get("GPUPOOL_REQUIRE_POSTGRES") == "1":
            pytest.fail(why)
        pytest.skip(why)
    with postgres_database("gpupool_e2e_dash") as url:
        yield url


@pytest.fixture(scope="module")
def cluster(pg_url, tmp_path_factory):  # noqa: ANN001, ANN201
    """A server (history sampled every second, per-job usage in 1 s buckets) and one agent with 2
    simulated H100s."""
    tmp = tmp_path_factory.mktemp("dash")
    server = start_server(pg_url, env={"GPUPOOL_HISTORY_INTERVAL_S": "1", "GPUPOOL_USAGE_BUCKET_S": "1"},
                          home=tmp / "home")
    agent = Agent(server, "sim-node-1", "1x2xH100-80GB", tmp)
    try:
        agent.wait_registered()
        yield server, agent
    finally:
        agent.stop()
        server.stop()


@pytest.fixture(scope="module")
def browser():  # noqa: ANN201
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium is not installed (scripts/setup.sh installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                              args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        try:
            yield b
        finally:
            b.close()


