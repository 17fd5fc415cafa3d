#!/usr/bin/env bash
# GPU check of the gpupool agent on a machine with ONE NVIDIA GPU (< 5 minutes).
# Needs python3 with torch (CUDA) and nvidia-ml-py; pydantic comes from scripts/gpu-check-wheels
# when it is not installed. Prints one JSON summary line on stdout (progress on stderr).
# Without a GPU it says "no NVIDIA GPU" and exits 0 (2 with --require-gpu).
# It starts its own MPS control daemon with pipe/log dirs under a fresh /tmp dir and ALWAYS
# stops it (echo quit | nvidia-cuda-mps-control) on exit; it never changes compute mode, MIG or
# clocks and never resets the GPU.
#   scripts/gpu-check-agent.sh [--seconds 8] [--require-gpu] [--out summary.json]
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
WORK=$(mktemp -d /tmp/gpupool-gpucheck.XXXXXX)
CHILD=""

stop_mps() {
  local pipe="$WORK/mps/pipe"
  if command -v nvidia-cuda-mps-control >/dev/null 2>&1 && [ -e "$pipe/control" ]; then
    echo quit | CUDA_MPS_PIPE_DIRECTORY="$pipe" CUDA_MPS_LOG_DIRECTORY="$WORK/mps/log" \
      timeout 15 nvidia-cuda-mps-control >/dev/null 2>&1 || true
  fi
}

cleanup() {
  if [ -n "$CHILD" ] && kill -0 "$CHILD" 2>/dev/null; then
    kill -TERM -- "-$CHILD" 2>/dev/null; sleep 1; kill -KILL -- "-$CHILD" 2>/dev/null
  fi
  stop_mps
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Own process group, so cleanup can stop the check and every slice job it started.
setsid "$PY" scripts/gpu_check_agent.py --work "$WORK" "$@" &
CHILD=$!
wait "$CHILD"
rc=$?
CHILD=""
exit $rc
