#!/usr/bin/env bash
# Builds gpupool's container images with podman (or docker), offline apart from the package
# index the host's pip already reaches: wheels are fetched or built on the host with the host's
# pip settings (pip.conf, PIP_* variables, CA bundle, local wheel folders) into a cached
# wheelhouse, and the builds install from it without any index. Cached: unchanged inputs reuse
# the wheelhouse and the engine's layer cache.
#
#   deploy/images/build.sh [IMAGE...]     IMAGE: gpupool agent agent-slim agent-cuda workload
#                                         (default: gpupool agent agent-slim workload)
# Environment:
#   CONTAINER_ENGINE   podman (default when installed) or docker
#   BASE_IMAGE         default localhost/gpupool-base:bookworm (built by scripts/base-image.sh)
#   GPUPOOL_IMAGE_CACHE  wheelhouse + build context (default ~/.cache/gpupool/images)
#   IMAGE_PREFIX       default localhost/ ; VERSION default 0.1.0 (the tags are PREFIXNAME:VERSION)
#   PIP                a pip for Python 3.11 (default: the project's .venv/bin/pip, else python3 -m pip)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)

VERSION=${VERSION:-0.1.0}
PREFIX=${IMAGE_PREFIX:-localhost/}
DEFAULT_BASE=localhost/gpupool-base:bookworm
BASE_IMAGE=${BASE_IMAGE:-$DEFAULT_BASE}
CACHE=${GPUPOOL_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gpupool/images}
IMAGES=("$@")
[ ${#IMAGES[@]} -eq 0 ] && IMAGES=(gpupool agent agent-slim workload)

if [ -n "${CONTAINER_ENGINE:-}" ]; then ENGINE_NAME=$CONTAINER_ENGINE
elif command -v podman >/dev/null 2>&1; then ENGINE_NAME=podman
elif command -v docker >/dev/null 2>&1; then ENGINE_NAME=docker
else
  echo "build: neither podman nor docker is installed (apt-get install podman runc mmdebstrap)" >&2
  exit 1
fi
ENGINE=(nice -n 10 "$ENGINE_NAME")
# crun fails on hybrid cgroup hosts; runc works everywhere. The default ulimits of the engine
# exceed what an unprivileged sandbox may set.
[ "$ENGINE_NAME" = podman ] && ENGINE+=(--runtime runc)
BUILD_FLAGS=(--network host --ulimit nofile=1024:1024 --ulimit nproc=1024:1024)
[ "$ENGINE_NAME" = podman ] && BUILD_FLAGS+=(--format docker)  # keeps HEALTHCHECK (not in OCI)

if [ -z "${PIP:-}" ]; then
  if [ -x "$ROOT/.venv/bin/pip" ]; then PIP="$ROOT/.venv/bin/pip"; else PIP="python3 -m pip"; fi
fi
read -r -a PIP_CMD <<<"$PIP"
if ! "${PIP_CMD[@]}" --version | grep -q "(python 3\.11)"; then
  echo "build: $PIP is not a Python 3.11 pip; the images run Debian bookworm's Python 3.11, so" \
       "the host wheels must be cp311 (set PIP=/path/to/python3.11 -m pip)" >&2
  exit 1
fi

mkdir -p "$CACHE/wheels"
exec 9>"$CACHE/lock"
flock 9  # one build at a time per cache (tests and make images may race)

if [ "$BASE_IMAGE" = "$DEFAULT_BASE" ]; then
  CONTAINER_ENGINE=$ENGINE_NAME GPUPOOL_BASE_IMAGE=$BASE_IMAGE nice -n 10 "$ROOT/scripts/base-image.sh"
fi

# ---- wheelhouse: every pinned requirement as a wheel, fetched once per requirements file ----
wheels_for() {  # wheels_for FILE: fill the wheelhouse for FILE unless done for this content
  local req=$HERE/requirements/$1 stamp
  stamp="$CACHE/wheels/.done-$1-$(sha256sum "$req" | cut -c1-16)"
  [ -e "$stamp" ] && return 0
  local deps=(--no-deps)
  grep -q 'pip install --no-deps' "$req" || deps=()
  echo "build: wheels for $1 (host pip settings) -> $CACHE/wheels"
  nice -n 10 "${PIP_CMD[@]}" wheel -q "${deps[@]}" -r "$req" -w "$CACHE/wheels" 2> >(grep -v "is ignored" >&2)
  touch "$stamp"
}

# ---- build context: the sources the images need, without caches (stable for the layer cache) ----
CTX=$CACHE/context
rm -rf "$CTX.new"
mkdir -p "$CTX.new/src"
tar -C "$ROOT" --exclude=__pycache__ --exclude='*.pyc' -cf - \
    controlplane agent workloads migrations examples pyproject.toml README.md | tar -C "$CTX.new/src" -xf -
cp -p "$HERE/install-venv.sh" "$HERE/healthcheck.py" "$CTX.new/"
cp -rp "$HERE/requirements" "$CTX.new/"
rm -rf "$CTX" && mv "$CTX.new" "$CTX"

REVISION=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
build() {  # build TAG CONTAINERFILE [--build-arg ...]
  local tag=$1 file=$2 start
  shift 2
  start=$(date +%s)
  echo "build: $tag"
  "${ENGINE[@]}" build "${BUILD_FLAGS[@]}" --build-context "wheels=$CACHE/wheels" \
    --build-arg "BASE_IMAGE=$BASE_IMAGE" --build-arg "VERSION=$VERSION" \
    --build-arg "REVISION=$REVISION" "$@" -f "$HERE/$file" -t "$tag" "$CTX"
  echo "build: $tag done in $(( $(date +%s) - start ))s"
  BUILT+=("$tag")
}

BUILT=()
for image in "${IMAGES[@]}"; do
  case "$image" in
    gpupool)    wheels_for core.txt
                build "${PREFIX}gpupool:$VERSION" gpupool.Containerfile ;;
    agent-slim) wheels_for core.txt
                build "${PREFIX}gpupool-agent:$VERSION-slim" gpupool-agent.Containerfile --build-arg RUNTIME=none ;;
    agent)      wheels_for core.txt; wheels_for runtime-cpu.txt
                build "${PREFIX}gpupool-agent:$VERSION" gpupool-agent.Containerfile --build-arg RUNTIME=cpu ;;
    agent-cuda) wheels_for core.txt; wheels_for runtime-cuda.txt
                build "${PREFIX}gpupool-agent:$VERSION-cuda" gpupool-agent.Containerfile --build-arg RUNTIME=cuda ;;
    workload)   wheels_for core.txt; wheels_for runtime-cpu.txt
                build "${PREFIX}gpupool-workload:$VERSION" gpupool-workload.Containerfile --build-arg RUNTIME=cpu ;;
    *) echo "build: unknown image '$image' (gpupool agent agent-slim agent-cuda workload)" >&2; exit 2 ;;
  esac
done

for tag in "${BUILT[@]}"; do
  size=$("${ENGINE[@]}" image inspect --format '{{.Size}}' "$tag")
  printf 'build: %-40s %6d MB\n' "$tag" $(( size / 1000000 ))
done
