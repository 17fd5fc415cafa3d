#!/usr/bin/env bash
# Builds the local Debian base image the gpupool Containerfiles start FROM when no registry is
# reachable: a bookworm root filesystem from Debian packages (mmdebstrap) imported as an image.
# Cached: does nothing when the image exists (--force rebuilds it).
#
#   scripts/base-image.sh [--force]
#   GPUPOOL_BASE_IMAGE=localhost/gpupool-base:bookworm   image name to build
#   CONTAINER_ENGINE=podman|docker                        default: podman if present, else docker
#   GPUPOOL_BASE_SOURCES=/path/to/sources                 apt sources (default: this host's)
set -euo pipefail

IMAGE=${GPUPOOL_BASE_IMAGE:-localhost/gpupool-base:bookworm}
# What the Containerfiles need: Python 3.11 with venv, CA certificates, tini as PID 1.
PACKAGES=python3,python3-venv,ca-certificates,tini
FORCE=0
[ "${1:-}" = "--force" ] && FORCE=1

if [ -n "${CONTAINER_ENGINE:-}" ]; then
  ENGINE=$CONTAINER_ENGINE
elif command -v podman >/dev/null 2>&1; then
  ENGINE=podman
elif command -v docker >/dev/null 2>&1; then
  ENGINE=docker
else
  echo "base-image: neither podman nor docker is installed (apt-get install podman runc mmdebstrap)" >&2
  exit 1
fi
# crun fails on hybrid cgroup hosts; runc works on v1, v2 and hybrid.
[ "$ENGINE" = podman ] && ENGINE="podman --runtime runc"

if [ "$FORCE" = 0 ] && $ENGINE image inspect "$IMAGE" >/dev/null 2>&1; then
  echo "base-image: $IMAGE exists (scripts/base-image.sh --force rebuilds it)"
  exit 0
fi
if ! command -v mmdebstrap >/dev/null 2>&1; then
  echo "base-image: mmdebstrap is not installed (apt-get install mmdebstrap)" >&2
  exit 1
fi

# The host's apt sources (a local mirror or proxy keeps working), else Debian's mirror.
SOURCES=${GPUPOOL_BASE_SOURCES:-}
if [ -z "$SOURCES" ]; then
  for candidate in /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list; do
    if [ -s "$candidate" ] && grep -qE '^[^#]*bookworm' "$candidate"; then SOURCES=$candidate; break; fi
  done
fi

echo "base-image: building $IMAGE with mmdebstrap (bookworm: ${PACKAGES//,/ })"
start=$(date +%s)
# minbase keeps apt (images that add Debian packages need it); docs, man pages and locales go.
mmdebstrap --variant=minbase --include="$PACKAGES" \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-include=/usr/share/locale/locale.alias' \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin' \
  bookworm - ${SOURCES:+"$SOURCES"} |
  $ENGINE import \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["/bin/bash"]' \
    --message "gpupool base: Debian bookworm (${PACKAGES})" - "$IMAGE" >/dev/null
echo "base-image: built $IMAGE in $(( $(date +%s) - start ))s"
