#!/usr/bin/env bash
# Creates .venv and installs everything gpupool needs: torch (CPU) first, then the rest.
set -euo pipefail
PYTHON=${PYTHON:-python3.11}
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=".venv/bin/pip"
$PIP install -q -U pip wheel setuptools
# torch first and pinned, so nothing later pulls a CUDA build.
$PIP install -q "torch==2.13.0"
echo "torch==2.13.0" > .venv/torch-pin.txt
$PIP install -q -c .venv/torch-pin.txt -e ".[test]"
