"""Separate thread pools for agent traffic and user requests, so slow user reads (log tails,
big lists) can never delay a node's heartbeat past its loss timeout."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

import anyio.to_thread
from fastapi import Request

T = TypeVar("T")


async def run_agent_work(request: Request, fn: Callable[..., T], *args: object, **kwargs: object) -> T:
    """Run ``fn`` on the agents' own thread pool (``GPUPOOL_AGENT_THREADS`` threads)."""
    state = request.app.state
    limiter = getattr(state, "agent_limiter", None)
    if limiter is None:  # made on first use: a limiter belongs to the running event loop
        limiter = state.agent_limiter = anyio.CapacityLimiter(state.settings.agent_threads)
    return await anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs), limiter=limiter)
