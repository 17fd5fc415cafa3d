#!/usr/bin/env bash
# GPU check of the gpupool agent on a machine with ONE NVIDIA GPU (< 5 minutes).
# Needs python3 with torch (CUDA) and nvidia-ml-py; pydantic comes from scripts/gpu-check-wheels
# when it is not installed. Prints one JSON summary line on stdout (progress on stderr).
# Without a GPU it says "no NVIDIA GPU" and exits 0 (2 with --require-gpu).
# Slice jobs run through the agent's own runtime (as root: their own uids and cgroups). It starts
# its own MPS control daemons with pipe/log dirs under a fresh /tmp dir and ALWAYS stops them
# (echo quit | nvidia-cuda-mps-control) and its jobs on exit; it never changes compute mode, MIG
# or clocks and never resets the GPU.
#   scripts/gpu-check-agent.sh [--seconds 8] [--require-gpu] [--out summary.json]
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
WORK=$(mktemp -d /tmp/gpupool-gpucheck.XXXXXX)
chmod 711 "$WORK"  # job uids enter their own directories under it
CHILD=""

stop_mps() {  # every daemon the check started: the agent's own and one per (uid, GPU)
  command -v nvidia-cuda-mps-control >/dev/null 2>&1 || return 0
  find "$WORK" -path '*pipe/control' 2>/dev/null | while read -r control; do
    local pipe; pipe=$(dirname "$control")
    echo quit | CUDA_MPS_PIPE_DIRECTORY="$pipe" CUDA_MPS_LOG_DIRECTORY="$(dirname "$pipe")/log" \
      timeout 15 nvidia-cuda-mps-control >/dev/null 2>&1 || true
  done
}

stop_jobs() {  # slice jobs run in their own sessions (and cgroups, as root): find them by the work dir
  local p
  for p in /proc/[0-9]*; do
    if tr '\0' '\n' < "$p/cmdline" 2>/dev/null | grep -qF "$WORK" ||
       tr '\0' '\n' < "$p/environ" 2>/dev/null | grep -qF "GPUCHECK_GO_FILE=$WORK"; then
      kill -KILL "${p#/proc/}" 2>/dev/null
    fi
  done
  for cg in /sys/fs/cgroup/*/gpupool-gpucheck; do
    [ -d "$cg" ] || continue
    find "$cg" -name cgroup.procs -exec cat {} + 2>/dev/null | xargs -r kill -KILL 2>/dev/null
    find "$cg" -mindepth 1 -depth -type d -exec rmdir {} + 2>/dev/null
  done
}

cleanup() {
  if [ -n "$CHILD" ] && kill -0 "$CHILD" 2>/dev/null; then
    kill -TERM -- "-$CHILD" 2>/dev/null; sleep 1; kill -KILL -- "-$CHILD" 2>/dev/null
  fi
  stop_jobs
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
