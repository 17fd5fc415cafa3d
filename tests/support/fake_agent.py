"""A lightweight protocol-speaking fake node agent (httpx): registers, heartbeats, and "runs"
each start order by reporting started and then exited, so server tests need no real agent."""

from __future__ import annotations

import itertools
import time
import uuid
from dataclasses import dataclass, field

import httpx

from tests.support.openapi_check import conformance_hooks


@dataclass
class FakeAgent:
    url: str
    bootstrap_token: str
    hostname: str
    gpus: int = 2
    model: str = "H100-80GB"
    memory_mib: int = 81559
    cpu_milli: int = 64000
    node_memory_mib: int = 512000
    node_id: str = ""
    token: str = ""
    epoch: int = 0
    running: dict = field(default_factory=dict)  # attempt_id -> rank
    _seq: itertools.count = field(default_factory=lambda: itertools.count(1))
    http: httpx.Client | None = None

    def __post_init__(self) -> None:
        self.http = httpx.Client(base_url=self.url, timeout=30.0, event_hooks=conformance_hooks(self.url))

    def close(self) -> None:
        self.http.close()

    @property
    def uuids(self) -> list[str]:
        return [f"GPU-{self.hostname}-{i}" for i in range(self.gpus)]

    def register(self) -> dict:
        body = {"node": {"hostname": self.hostname, "cpu_milli": self.cpu_milli,
                         "memory_mib": self.node_memory_mib},
                "accelerators": [{"uuid": u, "index": i, "model": self.model,
                                  "memory_mib": self.memory_mib} for i, u in enumerate(self.uuids)]}
        r = self.http.post("/api/v1/agent/register", json=body,
                           headers={"Authorization": f"Bearer {self.bootstrap_token}"})
        r.raise_for_status()
        data = r.json()
        self.node_id, self.token = data["node_id"], data["node_token"]
        self.http.headers["Authorization"] = f"Bearer {self.token}"
        return data

    def heartbeat(self, util: float = 10.0) -> httpx.Response:
        now = time.time()
        return self.http.post("/api/v1/agent/heartbeat", json={
            "node_id": self.node_id, "ts": now, "running_attempts": list(self.running),
            "samples": [{"uuid": u, "ts": now, "gpu_util_pct": util, "memory_used_mib": 1000.0}
                        for u in self.uuids]})

    def assignments(self, wait: float = 0.0) -> dict:
        r = self.http.get("/api/v1/agent/assignments", params={"wait": wait, "epoch": self.epoch})
        r.raise_for_status()
        data = r.json()
        self.epoch = data["epoch"]
        return data

    def report(self, job_id: str, attempt_id: str, kind: str, *, rank: int = 0,
               exit_code: int | None = None, endpoint: str | None = None, seq: int | None = None) -> dict:
        report = {"seq": seq if seq is not None else next(self._seq), "job_id": job_id,
                  "attempt_id": attempt_id, "rank": rank, "kind": kind, "ts": time.time(),
                  "exit_code": exit_code, "endpoint": endpoint, "pid": 4242}
        r = self.http.post("/api/v1/agent/status", json={"node_id": self.node_id, "reports": [report]})
        r.raise_for_status()
        return r.json()

    def log(self, job_id: str, attempt_id: str, offset: int, data: str, rank: int = 0) -> dict:
        r = self.http.post("/api/v1/agent/logs", json={"node_id": self.node_id, "chunks": [
            {"job_id": job_id, "attempt_id": attempt_id, "rank": rank, "offset": offset, "data": data}]})
        r.raise_for_status()
        return r.json()

    def step(self, wait: float = 0.0, *, finish: bool = True, exit_code: int = 0) -> int:
        """One agent turn: start every new order, obey stops; ``finish`` exits started ones."""
        a = self.assignments(wait)
        for order in a["start"]:
            if order["attempt_id"] in self.running:
                continue
            self.report(order["job_id"], order["attempt_id"], "started", rank=order["rank"])
            self.running[order["attempt_id"]] = (order["job_id"], order["rank"])
        for stop in a["stop"]:
            if stop["attempt_id"] in self.running:
                job_id, rank = self.running.pop(stop["attempt_id"])
                self.report(job_id, stop["attempt_id"], "killed", rank=rank, exit_code=-15)
        done = 0
        if finish:
            for attempt_id, (job_id, rank) in list(self.running.items()):
                self.report(job_id, attempt_id, "exited", rank=rank, exit_code=exit_code)
                self.running.pop(attempt_id)
                done += 1
        return done


def running_job(server, client: httpx.Client, spec: dict, gpu: float = 1) -> tuple[FakeAgent, str, str]:  # noqa: ANN001
    """A fresh one-GPU fake node of a model of its own, and ``spec`` placed on it and reported started:
    (agent, job id, attempt id). The model keeps other tests' nodes out of the way."""
    model = f"m-{uuid.uuid4().hex[:8]}"
    agent = FakeAgent(server.url, server.bootstrap_token, f"node-{model}", gpus=1, model=model)
    agent.register()
    spec = {**spec, "resources": {**spec.get("resources", {}), "gpu": gpu, "models": [model]}}
    job_id = client.post("/api/v1/jobs", json=spec).json()["id"]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        agent.heartbeat()
        start = agent.assignments()["start"]
        if start:
            agent.report(job_id, start[0]["attempt_id"], "started")
            return agent, job_id, start[0]["attempt_id"]
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} was not placed on {agent.hostname}")
