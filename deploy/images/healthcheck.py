"""Container HEALTHCHECK: exit 0 when GET of the URL (argv[1] or $GPUPOOL_HEALTHCHECK_URL) is 200.

With no URL set (a batch job in the workload image) there is nothing to probe: healthy.
"""

import os
import sys
import urllib.request

url = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("GPUPOOL_HEALTHCHECK_URL", "")
if not url:
    sys.exit(0)
try:
    with urllib.request.urlopen(url, timeout=4) as response:  # noqa: S310 - a loopback URL we set
        sys.exit(0 if response.status == 200 else 1)
except Exception as err:  # noqa: BLE001 - any failure is "unhealthy", said in one line
    print(f"unhealthy: {url}: {err}", file=sys.stderr)
    sys.exit(1)
