"""The node agent: registers, heartbeats, long-polls assignments, runs and supervises jobs.

Threads: the main thread supervises (exits, stop escalation, telemetry + memory watchdog, every
``tick_s``); "control" registers then long-polls assignments; "heartbeat" sends health and buffered
telemetry; "sender" ships the status outbox and log chunks. Nothing that talks to the server can
stall supervision. With the server unreachable the jobs keep running and every status report and a
bounded window of samples wait on disk (agent/buffer.py) until it is back.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from typing import Any

from agent.attribution import job_ancestry
from agent.buffer import DiskQueue
from agent.client import AgentClient, NotAuthorized, Rejected, ServerUnreachable
from agent.coexistence import check_device_plugin
from agent.config import AgentConfig
from agent.enforce.mps import MpsController
from agent.reports import ReportSender
from agent.runtime.manager import Runtime
from agent.sandbox.policy import Sandbox
from agent.state import StateDir
from agent.telemetry import TelemetrySampler
from controlplane.core import wire
from controlplane.core.states import ProcessState

log = logging.getLogger("gpupool.agent")
SAMPLE_BATCH = 1000
DEFAULT_LOSS_TIMEOUT_S = 40.0  # the server's default node loss timeout, until it tells its own
RETRY_FIRST_S = 0.5  # a failed heartbeat is retried soon, then less often, up to the interval


class Agent:
    def __init__(self, config: AgentConfig, backend: Any = None) -> None:
        from agent.devices import open_backend

        self.config = config
        self.state = StateDir(config.state_dir)
        if backend is None:
            options = {"node": config.node_name} if config.backend.startswith("sim") else {}
            backend = open_backend(config.backend, **options)
        self.backend = backend
        simulated = getattr(backend, "name", "").startswith("sim")
        self.sandbox = Sandbox(mode=config.sandbox, state_root=self.state.root, jobs_root=config.jobs_dir,
                               uid_range=config.uid_range, identity_scope=config.identity_scope,
                               cgroup_parent=config.cgroup_parent, pids_max=config.pids_max,
                               device_root=str(config.device_root),
                               container_runtime=config.container_runtime,
                               ulimits=tuple(config.container_ulimits))
        self.mps = MpsController(config.mps, self.state.root, applicable=not simulated,
                                 reason_off="simulated accelerators" if simulated else "",
                                 shared_dir=self.sandbox.mps_dir)
        self.address = config.node_address()
        self.client = AgentClient(config.server_url, ca_bundle=config.ca_bundle)
        self.node_id: str | None = None
        self.reports = ReportSender(self.state, self.client, None, lambda: self.node_id,
                                    on_delivered=lambda: self._set_connected(True))
        self.runtime = Runtime(self.state, node_name=config.node_name, address=self.address,
                               report=self.reports.report, mps=self.mps, backend=backend,
                               watchdog_grace_s=config.memory_grace_s, sandbox=self.sandbox,
                               log_max_bytes=config.log_max_bytes, keep_done_s=config.job_retention_s)
        self.reports.runtime = self.runtime
        self.sampler = TelemetrySampler(backend, self.runtime.managed_jobs,
                                        ancestry=job_ancestry(self.runtime.job_pids),
                                        reported=self.runtime.reported_gpu_memory)
        self.next_housekeeping = 0.0
        self.sample_outbox = DiskQueue(self.state.root / "outbox" / "telemetry.jsonl",
                                       max_items=config.telemetry_buffer)
        self.heartbeat_interval = config.heartbeat_interval_s
        self.loss_timeout_s = DEFAULT_LOSS_TIMEOUT_S  # the server says its own in every answer
        self.fenced = False
        self.connected = False
        self.samples_delivered = 0
        self.stopping = threading.Event()
        self._registered = threading.Event()
        self.exporter = None

    # ------------------------------------------------------------------ registration
    def _register(self) -> None:
        """Re-register with the node token from the state dir (the server refreshes this node's
        accelerators; a bootstrap token may not re-register a known node), else register with the
        bootstrap token. Server unreachable with a stored token: carry on with that token."""
        ident = self.state.load_identity()
        node_token = None
        if ident and ident.get("server_url") == self.config.server_url and ident.get("node_token"):
            self.node_id, self.client.token = ident["node_id"], ident["node_token"]
            node_token = ident["node_token"]
        request = wire.RegisterRequest(node=self._node_info(), accelerators=self.sampler.accelerators)
        delay = 0.5
        while not self.stopping.is_set():
            try:
                res = self.client.register(request, node_token or self.config.token)
                break
            except (ServerUnreachable, Rejected) as exc:
                if node_token:
                    log.warning("re-registration failed (%s); using node token from %s (node id %s)",
                                exc, self.state.root, self.node_id)
                    self._registered.set()
                    return
                log.warning("registration failed, retrying: %s", exc)
            except NotAuthorized as exc:
                if node_token and self.config.token:  # revoked, or a server that forgot the node
                    log.warning("node token refused (%s); registering with the bootstrap token", exc)
                    node_token = None
                    continue
                log.error("registration refused: %s", exc)
            self.stopping.wait(delay)
            delay = min(delay * 2, 10.0)
        else:
            return
        self.node_id, self.client.token = res.node_id, res.node_token
        self.heartbeat_interval = min(self.heartbeat_interval, res.heartbeat_interval_s)
        self.loss_timeout_s = res.node_loss_timeout_s
        self.reports.server_log_cap = res.log_cap
        self.state.save_identity({"server_url": self.config.server_url, "node_id": res.node_id,
                                  "node_token": res.node_token, "node_name": self.config.node_name})
        log.info("registered node %s as %s with %d accelerators", self.config.node_name, res.node_id,
                 len(request.accelerators))
        self._registered.set()

    def _reregister(self, why: Exception) -> None:
        log.error("node token refused (%s)", why)
        if not self.config.token:
            self.stopping.wait(5.0)
            return
        self._registered.clear()
        self.state.clear_identity()
        self._register()

    def _node_info(self) -> wire.NodeInfo:
        mem = 0
        try:
            with open("/proc/meminfo") as fh:
                for line in fh:
                    if line.startswith("MemTotal:"):
                        mem = int(line.split()[1]) // 1024
        except OSError:
            pass
        return wire.NodeInfo(hostname=self.config.node_name, address=self.address,
                             cpu_milli=(os.cpu_count() or 1) * 1000, memory_mib=mem,
                             labels=self.config.labels, backend=getattr(self.backend, "name", "unknown"))

    def _set_connected(self, ok: bool, why: object = None) -> None:
        if ok and not self.connected:
            log.info("control plane reachable at %s", self.config.server_url)
        elif not ok and self.connected:
            log.warning("control plane unreachable (%s); jobs keep running, reports are buffered", why)
        self.connected = ok

    # ------------------------------------------------------------------ loops
    def _forever(self, name: str, loop: Any) -> None:
        """Run a loop in its thread; an unexpected error is logged and the loop starts again."""
        while not self.stopping.is_set():
            try:
                loop()
                return
            except Exception:  # noqa: BLE001 - a bug must not silently stop the agent's loops
                log.exception("%s loop failed; restarting it in 1 s", name)
                self.stopping.wait(1.0)

    def _wait_registered(self) -> bool:
        while not self.stopping.is_set():
            if self._registered.wait(0.5):
                return True
        return False

    def _control_loop(self) -> None:
        if not self._registered.is_set():
            self._register()
        epoch, delay = 0, 0.5
        while not self.stopping.is_set():
            try:
                a = self.client.assignments(self.config.poll_wait_s, epoch)
            except ServerUnreachable as exc:
                self._set_connected(False, exc)
                self.stopping.wait(delay)
                delay = min(delay * 2, 5.0)
                continue
            except NotAuthorized as exc:
                self._reregister(exc)
                continue
            except Rejected as exc:
                log.error("assignments: %s", exc)
                self.stopping.wait(5.0)
                continue
            self._set_connected(True)
            delay = 0.5
            self._apply(a)
            epoch = a.epoch

    def _apply(self, a: wire.Assignments) -> None:
        stopping = {s.attempt_id for s in a.stop}
        for order in a.stop:
            if not self.runtime.stop(order.attempt_id, order.reason, order.grace_s, order.epoch):
                self.reports.report_unknown_stop(order, self.config.node_name)
        for order in a.start:
            if order.attempt_id not in stopping:
                self.runtime.start(order)
        desired = set(a.desired_attempts) | {o.attempt_id for o in a.start}
        for attempt in self.runtime.running_attempts():
            job = self.runtime.job(attempt)
            if attempt not in desired and job is not None and job.state == ProcessState.RUNNING:
                self.runtime.stop(attempt, f"stale: attempt no longer assigned to node "
                                           f"{self.config.node_name}", job.order.grace_s)

    def _heartbeat_loop(self) -> None:
        if not self._wait_registered():
            return
        buffered_ts = None
        retry = RETRY_FIRST_S
        while not self.stopping.is_set():
            snap = self.sampler.latest
            if snap is not None and snap.ts != buffered_ts:  # each snapshot buffered once
                buffered_ts = snap.ts
                self.sample_outbox.extend([s.model_dump(mode="json") for s in snap.samples])
            sent, more = self._send_heartbeat(snap)
            if not sent:  # retry soon (a restarted server must hear us within its loss timeout)
                self.stopping.wait(min(retry, self.heartbeat_interval))
                retry *= 2
                continue
            retry = RETRY_FIRST_S
            if not more:
                self.stopping.wait(self.heartbeat_interval)

    def _send_heartbeat(self, snap: Any) -> tuple[bool, bool]:
        """One heartbeat with up to SAMPLE_BATCH buffered samples: (delivered, more waiting)."""
        samples = self.sample_outbox.peek(SAMPLE_BATCH)
        batch = [wire.AcceleratorSample.model_validate(s) for s in samples]
        if len(self.sample_outbox) > len(samples) and snap is not None:
            batch.extend(snap.samples)  # replaying a backlog: the newest sample stays last
        health = self.backend.health()
        hb = wire.Heartbeat(node_id=self.node_id or "", ts=time.time(),
                            healthy=all(health.values()) if health else True,
                            samples=batch,
                            slice_usage=snap.slice_usage() if snap is not None else [],
                            running_attempts=self.runtime.running_attempts())
        try:
            res = self.client.heartbeat(hb)
        except ServerUnreachable as exc:
            self._set_connected(False, exc)
            return False, False
        except NotAuthorized as exc:
            log.error("heartbeat refused: %s", exc)
            return False, False
        except Rejected as exc:
            log.error("heartbeat rejected, dropping %d samples: %s", len(samples), exc)
            self.sample_outbox.pop(len(samples))
            return False, False
        self._set_connected(True)
        self.sample_outbox.pop(len(samples))
        self.samples_delivered += len(samples)
        self.heartbeat_interval = min(self.config.heartbeat_interval_s, res.heartbeat_interval_s)
        self.loss_timeout_s = res.node_loss_timeout_s
        self.reports.server_log_cap = res.log_cap
        return True, len(self.sample_outbox) > 0

    def _fence(self) -> None:
        """Cut off from the control plane for longer than its node loss timeout: the server has
        declared this node lost and requeued its jobs elsewhere, so stop them here (SIGTERM, grace,
        checkpoint) before their copies run. Answers again (even 503s) end the fence."""
        silent = time.monotonic() - self.client.last_answer
        if silent <= self.loss_timeout_s:
            if self.fenced:
                log.info("control plane answers again; fence lifted")
            self.fenced = False
            return
        if self.fenced or not self.config.fencing or not self._registered.is_set():
            return
        self.fenced = True
        running = [a for a in self.runtime.running_attempts()
                   if (job := self.runtime.job(a)) is not None and job.state == ProcessState.RUNNING]
        log.error("no answer from the control plane for %.0f s (node loss timeout %.0f s): "
                  "stopping %d job(s); the server requeues them elsewhere", silent, self.loss_timeout_s,
                  len(running))
        for attempt in running:
            job = self.runtime.job(attempt)
            self.runtime.stop(attempt, f"fenced: node {self.config.node_name} lost contact with the "
                                       f"control plane for {silent:.0f} s", job.order.grace_s)

    def _sender_loop(self) -> None:
        running = lambda: not self.stopping.is_set()  # noqa: E731
        if not self._wait_registered():
            return
        while running():
            self.reports.wake.clear()
            try:
                self.reports.flush_status(running)
                self.reports.ship_logs()
                self.reports.flush_status(running)  # a final report that waited for its logs
            except ServerUnreachable as exc:
                self._set_connected(False, exc)
                self.stopping.wait(1.0)
            except NotAuthorized as exc:
                log.error("status/logs refused: %s", exc)
                self.stopping.wait(5.0)
            self.reports.wake.wait(self.config.tick_s)

    def _supervise_once(self) -> None:
        self.runtime.tick()
        self._fence()
        if time.monotonic() >= self.next_housekeeping:
            self.next_housekeeping = time.monotonic() + self.config.housekeeping_interval_s
            removed = self.runtime.housekeeping()
            if removed:
                log.info("removed %d finished job director(ies) past retention", len(removed))
        try:
            snap = self.sampler.sample()
        except Exception as exc:  # a device error must not stop supervision
            log.error("telemetry sample failed: %s", exc)
            return
        self.runtime.enforce_memory({(r.attempt_id, r.accelerator_uuid): r.memory_used_mib
                                     for r in snap.slices},
                                    {(e.attempt_id, e.accelerator_uuid): e.memory_mib for e in snap.escapes})

    def _final_flush(self) -> None:
        """Best effort, a few seconds: deliver what the stopped jobs reported."""
        if not self._registered.is_set():
            return
        try:
            self.reports.flush_status()
            self.reports.ship_logs()
            self.reports.flush_status()
        except Exception as exc:  # noqa: BLE001 - the reports stay on disk for the next start
            log.warning("could not deliver the final reports now (%s); they stay buffered", exc)

    # ------------------------------------------------------------------ run
    def health(self) -> dict[str, Any]:
        return {"ok": True, "registered": self._registered.is_set(), "connected": self.connected,
                "fenced": self.fenced,
                "node_id": self.node_id, "jobs": len(self.runtime.root_pids()),
                "sandbox": self.sandbox.reason or f"on ({self.sandbox.support.detail})",
                "buffered_status_reports": len(self.reports.outbox),
                "buffered_samples": len(self.sample_outbox),
                "dropped_samples": self.sample_outbox.dropped,
                "samples_delivered": self.samples_delivered,
                "reports_delivered": self.reports.delivered}

    def start_exporter(self) -> None:
        if not self.config.exporter_port:
            return
        from agent.exporter import AgentExporter

        self.exporter = AgentExporter(lambda: self.sampler.latest, hostname=self.config.node_name,
                                      port=self.config.exporter_port, health=self.health)
        port = self.exporter.start()
        log.info("metrics and /healthz on port %d", port)

    def check_can_register(self) -> None:
        """Fail fast (ValueError) when there is neither a stored node token nor a bootstrap token."""
        ident = self.state.load_identity()
        if ident and ident.get("server_url") == self.config.server_url and ident.get("node_token"):
            return
        if not self.config.token:
            raise ValueError(f"no node token in {self.state.root} for {self.config.server_url} and "
                             "no bootstrap token: pass --token (or GPUPOOL_AGENT_TOKEN) to register")

    def run(self) -> None:
        self.check_can_register()
        adopted = self.runtime.adopt_all()
        if adopted:
            log.info("re-adopted %d running job(s): %s", len(adopted), ", ".join(adopted))
        self._supervise_once()
        self.start_exporter()
        for name, loop in (("control", self._control_loop), ("heartbeat", self._heartbeat_loop),
                           ("sender", self._sender_loop)):
            threading.Thread(target=self._forever, args=(name, loop), name=name, daemon=True).start()
        try:
            while not self.stopping.is_set():
                try:
                    self._supervise_once()
                except Exception:  # noqa: BLE001 - keep supervising the other jobs
                    log.exception("supervision failed; retrying")
                self.stopping.wait(self.config.tick_s)
        finally:
            self.shutdown()

    def shutdown(self) -> None:
        self.stopping.set()
        if self.config.stop_jobs_on_exit and self.runtime.root_pids():
            log.info("stopping %d job(s) before exiting", len(self.runtime.root_pids()))
            self.runtime.stop_all(f"agent on node {self.config.node_name} stopped")
            self._final_flush()
        self.runtime.shutdown()
        if self.exporter is not None:
            self.exporter.stop()
        self.client.close()
        self.backend.close()
        log.info("agent stopped; %d job(s) left running for the next start to re-adopt",
                 len(self.runtime.root_pids()))


def setup_logging(level: str) -> None:
    logging.basicConfig(stream=sys.stdout, level=getattr(logging, level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    logging.getLogger("httpx").setLevel(logging.WARNING)


def run_agent(config: AgentConfig) -> None:
    """Run the agent until SIGTERM/SIGINT (call from the main thread). Jobs outlive the agent."""
    setup_logging(config.log_level)
    check_device_plugin(config.backend)  # never share GPUs with Kubernetes' device plugin
    agent = Agent(config)

    def _stop(signum: int, _frame: object) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        agent.stopping.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    log.info("gpupool agent %s on %s: server %s, backend %s, state %s, mps %s",
             wire.NodeInfo.model_fields["agent_version"].default, config.node_name,
             config.server_url, config.backend, config.state_dir, agent.mps.mode)
    agent.run()
