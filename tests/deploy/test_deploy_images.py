"""The images: built from multi-stage Containerfiles with pinned requirements, a non-root user, a
HEALTHCHECK and OCI labels. The built images (server and slim agent; the full runtime images come
from the same files through `make images`) run as non-root. The server image answering /readyz on
PostgreSQL is part of tests/deploy/test_deploy_pool.py."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.containers import Containers, build_images, engine_command

ROOT = Path(__file__).resolve().parents[2]
IMAGES_DIR = ROOT / "deploy" / "images"
CONTAINERFILES = sorted(IMAGES_DIR.glob("*.Containerfile"))
OCI_LABELS = ("title", "description", "version", "revision", "licenses", "source", "base.name")


@pytest.mark.parametrize("path", CONTAINERFILES, ids=lambda p: p.stem)
def test_containerfile_is_multistage_non_root_with_healthcheck_and_labels(path: Path) -> None:
    text = path.read_text()
    stages = re.findall(r"^FROM (\S+)", text, re.M)
    assert len(stages) >= 2 and all(s == "${BASE_IMAGE}" for s in stages), stages
    final = text[text.rindex("\nFROM "):]
    users = re.findall(r"^USER (\d+):(\d+)$", final, re.M)
    assert users and users[-1] != ("0", "0") and "0" not in users[-1]
    assert re.search(r"^HEALTHCHECK .*CMD", final, re.M | re.S)
    for label in OCI_LABELS:
        assert f"org.opencontainers.image.{label}=" in final, label
    assert "--mount=type=bind,from=wheels" in text  # installs from the host's wheelhouse only


def test_requirements_are_pinned_and_match_the_tested_venv() -> None:
    for path in (IMAGES_DIR / "requirements").glob("*.txt"):
        for line in path.read_text().splitlines():
            if line and not line.startswith("#"):
                assert re.fullmatch(r"[A-Za-z0-9_.\-]+==[A-Za-z0-9_.+\-]+", line), f"{path.name}: {line}"
    result = subprocess.run([sys.executable, str(IMAGES_DIR / "lock.py"), "--check"], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr


@pytest.mark.timeout(1800)
@pytest.mark.parametrize("name", ["gpupool", "agent-slim"])
def test_built_image_runs_as_non_root_with_its_labels(name: str) -> None:
    c = Containers(engine_command())
    image = build_images(name)[name]
    whoami = c.run_once(image, "-u", options=("--entrypoint", "id"))
    assert whoami.returncode == 0 and whoami.stdout.strip() not in ("", "0"), whoami.stderr
    assert c.run_once(image, "-g", options=("--entrypoint", "id")).stdout.strip() != "0"
    config = json.loads(c.cmd("image", "inspect", "--format", "{{json .Config}}", image).stdout)
    labels = config["Labels"]
    for label in OCI_LABELS:
        assert labels.get(f"org.opencontainers.image.{label}"), label
    assert labels["org.opencontainers.image.version"] == "0.1.0"
    health = json.loads(c.cmd("image", "inspect", "--format", "{{json .Config.Healthcheck}}", image).stdout)
    assert health and health["Test"][-1] == "/opt/gpupool/healthcheck.py", "HEALTHCHECK lost (--format docker)"
    help_text = c.run_once(image, "--help")
    assert help_text.returncode == 0, help_text.stderr
