"""A server restarted on its own database with the same admin token starts and keeps its data."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.support.server import start_server


def test_restart_on_existing_sqlite_database_with_admin_token(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'gpupool.db'}"
    first = start_server(url, home=tmp_path, admin_token="gpa_restart_test", timeout=60)
    try:
        job = first.client().post("/api/v1/jobs", json={"name": "keep", "command": ["true"],
                                                         "resources": {"gpu": 1}})
        assert job.status_code == 201, job.text
    finally:
        first.stop()
    second = start_server(url, home=tmp_path, admin_token="gpa_restart_test", timeout=20)
    try:
        got = second.client().get(f"/api/v1/jobs/{job.json()['id']}")
        assert got.status_code == 200 and got.json()["name"] == "keep"
        assert httpx.get(f"{second.url}/readyz").status_code == 200
    finally:
        second.stop()
