#!/usr/bin/env bash
# GPU check of the packaged workloads on a machine with ONE NVIDIA GPU (about 10 minutes): a bf16
# DeepSpeed pre-train of a ~300M-parameter model (tokens/s, MFU), SIGTERM + resume on a 0.5-GPU slice,
# LoRA and QLoRA fine-tunes on 0.5-GPU slices whose NVML peak must stay inside the slice; one JSON
# summary line on stdout (progress on stderr; --out docs/gpu-check-workloads.json keeps it). Needs
# python3 with torch (CUDA), transformers, peft (bitsandbytes for QLoRA); DeepSpeed and pydantic come
# from bundled wheels when missing.
# Without a GPU it says "no NVIDIA GPU" and exits 0 (2 with --require-gpu).
#   scripts/gpu-check-workloads.sh [--require-gpu] [--steps 60] [--out summary.json] [--cpu-rehearsal]
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
WORK=$(mktemp -d /tmp/gpupool-gpucheck-workloads.XXXXXX)
CHILD=""

cleanup() {
  if [ -n "$CHILD" ] && kill -0 "$CHILD" 2>/dev/null; then
    kill -TERM -- "-$CHILD" 2>/dev/null; sleep 2; kill -KILL -- "-$CHILD" 2>/dev/null
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Own process group, so cleanup stops the check and every training process it started.
setsid "$PY" scripts/gpu_check_workloads.py --work "$WORK" "$@" &
CHILD=$!
wait "$CHILD"
rc=$?
CHILD=""
exit $rc
