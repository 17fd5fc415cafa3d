"""History loop: once a minute, write the pool's utilisation/allocation samples and prune old ones.

Runs beside the other loops in the server process (every replica may run it; the samples'
unique bucket keeps one row per minute). The database work runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time

from controlplane.history import BUCKET_S, DEFAULT_RETENTION_S, sample

log = logging.getLogger("gpupool.history")


async def history_loop(db, *, interval_s: float = BUCKET_S,  # noqa: ANN001
                       retention_s: float = DEFAULT_RETENTION_S,
                       stop: asyncio.Event | None = None) -> None:
    """Sample now, then every ``interval_s`` until ``stop`` is set (or the task is cancelled)."""
    stop = stop or asyncio.Event()
    while not stop.is_set():
        try:
            await asyncio.to_thread(sample, db, time.time(), retention_s=retention_s,
                                    bucket_s=min(interval_s, BUCKET_S))
        except Exception:  # noqa: BLE001 - a failed sample must not end the loop
            log.exception("history sample failed; retrying next interval")
        try:
            await asyncio.wait_for(stop.wait(), timeout=interval_s)
        except asyncio.TimeoutError:
            pass


def start_history_loop(db, **kwargs) -> asyncio.Task:  # noqa: ANN001, ANN003
    """Start the loop on the running event loop (call from the app's lifespan/startup).

    GPUPOOL_HISTORY_INTERVAL_S and GPUPOOL_HISTORY_RETENTION_S override the defaults.
    """
    kwargs.setdefault("interval_s", float(os.environ.get("GPUPOOL_HISTORY_INTERVAL_S", BUCKET_S)))
    kwargs.setdefault("retention_s", float(os.environ.get("GPUPOOL_HISTORY_RETENTION_S",
                                                          DEFAULT_RETENTION_S)))
    return asyncio.get_running_loop().create_task(history_loop(db, **kwargs), name="gpupool-history")
