#!/bin/sh
# install-venv.sh VENV REQUIREMENTS... : the pinned requirements into VENV (created when missing),
# from /wheels only. Runs in the images' builder stages; /wheels is the wheelhouse build.sh filled
# on the host, so no index is contacted. A complete lock (lock.py writes "pip install --no-deps"
# in its header) is installed as is; top-level pins (runtime-cuda.txt) resolve in the wheelhouse.
set -eu
venv=$1
shift
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  # gpupool runs from its source tree (migrations/ and examples/ sit beside the packages)
  site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  echo /opt/gpupool/src > "$site/gpupool-src.pth"
  printf '#!%s\nimport sys\nfrom controlplane.cli.main import app\nsys.exit(app())\n' \
    "$venv/bin/python" > "$venv/bin/gpupool"
  chmod 755 "$venv/bin/gpupool"
fi
for req in "$@"; do
  if grep -q 'pip install --no-deps' "$req"; then deps=--no-deps; else deps=; fi
  "$venv/bin/pip" install --no-cache-dir --no-index --find-links /wheels $deps -r "$req"
done
