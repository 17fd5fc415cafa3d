"""API load benchmark: concurrent job submits (or node heartbeats) against a gpupool server.

    python benchmarks/api_load.py                        # starts a server on a fresh PostgreSQL db
    python benchmarks/api_load.py --db sqlite
    python benchmarks/api_load.py --url http://127.0.0.1:8080 --token $TOKEN   # a running server
    python benchmarks/api_load.py --heartbeats           # 1,000 nodes x 8 GPUs every 10 s

Prints progress to stderr and one JSON line of figures last on stdout:
{"db", "clients", "submits_per_s", "p50_ms", "p99_ms", "errors", "lost"} (heartbeat mode:
"heartbeats_per_s", "nodes", "gpus_per_node" instead of "submits_per_s").
Targets on a 2-core box with PostgreSQL: >= 300 submits/s at p99 <= 100 ms, 0 errors, 0 lost;
heartbeats sustained at p99 <= 100 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


EXTRA_ENV: dict[str, str] = {}


def cpu_seconds(pid: int | None) -> float:
    """user+system CPU of a process and its children (the server's own cost, load-independent)."""
    if pid is None:
        return 0.0
    try:
        import psutil  # optional

        proc = psutil.Process(pid)
        total = 0.0
        for p in [proc, *proc.children(recursive=True)]:
            t = p.cpu_times()
            total += t.user + t.system
        return total
    except Exception:  # noqa: BLE001
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            import os

            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except OSError:
            return 0.0


def pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


async def submits(url: str, token: str, clients: int, total: int, tag: str) -> dict:
    latencies: list[float] = []
    errors = 0
    accepted: set[str] = set()
    counter = iter(range(total))
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"},
                                 limits=limits, timeout=30) as http:
        async def worker() -> None:
            nonlocal errors
            for i in counter:
                body = {"name": f"{tag}-{i}", "command": ["true"], "resources": {"gpu": 0.25}}
                t0 = time.perf_counter()
                try:
                    r = await http.post("/api/v1/jobs", json=body,
                                        headers={"Idempotency-Key": f"{tag}-{i}"})
                    ok = r.status_code in (200, 201)
                    why = f"{r.status_code} {r.text[:200]}"
                except httpx.HTTPError as err:
                    ok, r, why = False, None, f"{type(err).__name__}: {err}"
                if not ok and errors < 5:
                    print(f"submit error: {why}", file=sys.stderr)
                latencies.append((time.perf_counter() - t0) * 1000)
                if ok:
                    accepted.add(r.json()["id"])
                else:
                    errors += 1

        await asyncio.gather(*(worker() for _ in range(clients)))  # warm-up pass excluded below
    return {"latencies": latencies, "errors": errors, "accepted": accepted}


async def count_lost(url: str, token: str, accepted: set[str]) -> int:
    seen: set[str] = set()
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"},
                                 timeout=60) as http:
        cursor = None
        while True:
            params = {"limit": 1000, **({"cursor": cursor} if cursor else {})}
            page = (await http.get("/api/v1/jobs", params=params)).json()
            seen |= {j["id"] for j in page["items"]}
            cursor = page["next_cursor"]
            if not cursor:
                break
    return len(accepted - seen)


async def heartbeats(url: str, bootstrap: str, nodes: int, gpus: int, period: float,
                     duration: float, clients: int, slice_usage: bool = True) -> dict:
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    tag = uuid.uuid4().hex[:6]
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as http:
        sem = asyncio.Semaphore(clients)

        async def register(i: int) -> tuple[str, str, list[str]]:
            uuids = [f"GPU-{tag}-{i}-{g}" for g in range(gpus)]
            body = {"node": {"hostname": f"bench-{tag}-{i}", "cpu_milli": 64000, "memory_mib": 512000},
                    "accelerators": [{"uuid": u, "index": g, "model": "H100-80GB", "memory_mib": 81559}
                                     for g, u in enumerate(uuids)]}
            async with sem:
                r = await http.post("/api/v1/agent/register", json=body,
                                    headers={"Authorization": f"Bearer {bootstrap}"})
            r.raise_for_status()
            return r.json()["node_id"], r.json()["node_token"], uuids

        t0 = time.perf_counter()
        registered = await asyncio.gather(*(register(i) for i in range(nodes)))
        print(f"registered {nodes} nodes in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
        latencies: list[float] = []
        errors = 0
        sent = 0

        async def beat(node_id: str, token: str, uuids: list[str]) -> None:
            nonlocal errors, sent
            ts = time.time()
            body = {"node_id": node_id, "ts": ts, "samples": [
                {"uuid": u, "ts": ts, "gpu_util_pct": 50.0, "memory_used_mib": 1000.0, "power_w": 300.0,
                 "temperature_c": 60.0} for u in uuids]}
            if slice_usage:  # every GPU busy with one job, as a full pool's agents report it
                body["slice_usage"] = [{"job_id": f"{node_id}{g}", "attempt_id": f"{node_id}{g}",
                                        "accelerator_uuid": u, "memory_used_mib": 900.0, "sm_util_pct": 45.0}
                                       for g, u in enumerate(uuids)]
            t = time.perf_counter()
            try:
                async with sem:
                    r = await http.post("/api/v1/agent/heartbeat", json=body,
                                        headers={"Authorization": f"Bearer {token}"})
                ok = r.status_code == 200
            except httpx.HTTPError:
                ok = False
            latencies.append((time.perf_counter() - t) * 1000)
            sent += 1
            errors += 0 if ok else 1

        # each node beats once per period, spread evenly: nodes/period heartbeats per second
        start = time.perf_counter()
        tasks = []
        interval = period / nodes
        i = 0
        while time.perf_counter() - start < duration:
            due = start + i * interval
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            node_id, token, uuids = registered[i % nodes]
            tasks.append(asyncio.create_task(beat(node_id, token, uuids)))
            i += 1
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
    return {"latencies": latencies, "errors": errors, "rate": sent / elapsed}


@contextlib.contextmanager
def own_server(db: str):  # noqa: ANN201
    from tests.support.db import database
    from tests.support.server import start_server

    with tempfile.TemporaryDirectory() as tmp, database(db, Path(tmp)) as url:
        srv = start_server(url, env={"GPUPOOL_SCHEDULER_INTERVAL_S": "1", "GPUPOOL_LOG_LEVEL": "warning",
                                     "GPUPOOL_HEARTBEAT_TIMEOUT_S": "60", **EXTRA_ENV}, home=Path(tmp) / "home")
        try:
            yield srv
        finally:
            srv.stop()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url")
    p.add_argument("--token", help="admin/member token (submits) when --url is given")
    p.add_argument("--bootstrap-token", help="agent bootstrap token (heartbeats) when --url is given")
    p.add_argument("--db", choices=["postgresql", "sqlite"], default="postgresql")
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--submits", type=int, default=6000)
    p.add_argument("--heartbeats", action="store_true")
    p.add_argument("--no-slice-usage", action="store_true",
                   help="heartbeats without per-slice usage (by default each GPU reports one job's use)")
    p.add_argument("--nodes", type=int, default=1000)
    p.add_argument("--gpus", type=int, default=8)
    p.add_argument("--period", type=float, default=10.0)
    p.add_argument("--duration", type=float, default=30.0)
    p.add_argument("--server-env", action="append", default=[], metavar="KEY=VALUE",
                   help="extra GPUPOOL_* setting for the server this benchmark starts")
    args = p.parse_args()
    EXTRA_ENV.update(kv.split("=", 1) for kv in args.server_env)

    with contextlib.ExitStack() as stack:
        pid = None
        if args.url:
            url, token, boot, db = args.url, args.token, args.bootstrap_token, "external"
        else:
            srv = stack.enter_context(own_server(args.db))
            url, token, boot, db = srv.url, srv.admin_token, srv.bootstrap_token, args.db
            pid = srv.process.pid
        if args.heartbeats:
            cpu0 = cpu_seconds(pid)
            res = asyncio.run(heartbeats(url, boot, args.nodes, args.gpus, args.period, args.duration,
                                         args.clients, not args.no_slice_usage))
            lat = res["latencies"]
            out = {"db": db, "clients": args.clients, "nodes": args.nodes, "gpus_per_node": args.gpus,
                   "slice_usage": not args.no_slice_usage,
                   "heartbeats_per_s": round(res["rate"], 1), "target_per_s": round(args.nodes / args.period, 1),
                   "p50_ms": round(pct(lat, 0.5), 2), "p99_ms": round(pct(lat, 0.99), 2),
                   "errors": res["errors"], "lost": 0,
                   "server_cpu_ms_per_request": round((cpu_seconds(pid) - cpu0) * 1000 / max(1, len(lat)), 2)}
        else:
            tag = f"bench-{uuid.uuid4().hex[:6]}"
            asyncio.run(submits(url, token, args.clients, min(200, args.submits), f"{tag}-warm"))
            t0, cpu0 = time.perf_counter(), cpu_seconds(pid)
            res = asyncio.run(submits(url, token, args.clients, args.submits, tag))
            elapsed = time.perf_counter() - t0
            cpu = cpu_seconds(pid) - cpu0
            lost = asyncio.run(count_lost(url, token, res["accepted"]))
            lat = res["latencies"]
            out = {"db": db, "clients": args.clients, "submits": args.submits,
                   "submits_per_s": round(args.submits / elapsed, 1),
                   "p50_ms": round(pct(lat, 0.5), 2), "p99_ms": round(pct(lat, 0.99), 2),
                   "errors": res["errors"], "lost": lost,
                   "server_cpu_ms_per_request": round(cpu * 1000 / args.submits, 2)}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
