"""Prometheus exporter of the agent: DCGM-compatible per-GPU series and gpupool per-slice series.

Served on port 9400 (as dcgm-exporter) at /metrics, with /healthz on the same port. A custom
Collector renders the sampler's latest TelemetrySnapshot at scrape time into a private
CollectorRegistry (nothing goes to prometheus_client's global registry), so a scrape never
touches the GPU. Per-GPU series keep dcgm-exporter's names and labels (gpu, UUID, device,
modelName, Hostname) so existing Grafana dashboards work; gpupool_slice_* series show each
job's allocation vs use (labels job, attempt, queue, team, user, UUID, gpu; team, queue and
user come from the start order's identity, set by the server, never from the job's environment);
percentages are clamped to 0..100 and every series of an idle slice reads 0.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from agent.telemetry import TelemetrySnapshot

DEFAULT_PORT = 9400
GPU_LABELS = ["gpu", "UUID", "device", "modelName", "Hostname"]
SLICE_LABELS = ["job", "attempt", "queue", "team", "user", "UUID", "gpu", "Hostname"]

# (metric, help, sample field) for the DCGM fields taken straight from an AcceleratorSample
_DCGM_FIELDS = (
    ("DCGM_FI_DEV_GPU_UTIL", "GPU utilization (in %).", "gpu_util_pct"),
    ("DCGM_FI_DEV_MEM_COPY_UTIL", "Memory utilization (in %).", "mem_util_pct"),
    ("DCGM_FI_DEV_FB_USED", "Framebuffer memory used (in MiB).", "memory_used_mib"),
    ("DCGM_FI_DEV_POWER_USAGE", "Power draw (in W).", "power_w"),
    ("DCGM_FI_DEV_GPU_TEMP", "GPU temperature (in C).", "temperature_c"),
    ("DCGM_FI_DEV_SM_CLOCK", "SM clock frequency (in MHz).", "sm_clock_mhz"),
    ("DCGM_FI_DEV_CLOCK_THROTTLE_REASONS", "Current clock throttle reasons (bitmask).", "throttle_reasons"),
    ("DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", "Total number of double-bit volatile ECC errors.", "ecc_errors"),
)


def _pct(value: float | None) -> float:
    return 0.0 if value is None else min(100.0, max(0.0, float(value)))


class SnapshotCollector(Collector):
    """Turns the latest TelemetrySnapshot into metric families at each scrape."""

    def __init__(self, latest: Callable[[], TelemetrySnapshot | None], hostname: str) -> None:
        self._latest = latest
        self._hostname = hostname

    def collect(self) -> Iterator[GaugeMetricFamily]:
        snap = self._latest()
        if snap is None:
            return
        infos = {a.uuid: a for a in snap.accelerators}
        gpu_labels: dict[str, list[str]] = {}
        for a in snap.accelerators:
            gpu_labels[a.uuid] = [str(a.index), a.uuid, f"nvidia{a.index}", a.name or a.model, self._hostname]
        for metric, help_text, attr in _DCGM_FIELDS:
            family = GaugeMetricFamily(metric, help_text, labels=GPU_LABELS)
            for s in snap.samples:
                value = getattr(s, attr)
                if value is not None and s.uuid in gpu_labels:
                    family.add_metric(gpu_labels[s.uuid], float(value))
            yield family
        free = GaugeMetricFamily("DCGM_FI_DEV_FB_FREE", "Framebuffer memory free (in MiB).", labels=GPU_LABELS)
        energy = GaugeMetricFamily("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION",
                                   "Total energy consumption since boot (in mJ).", labels=GPU_LABELS)
        xid = GaugeMetricFamily("DCGM_FI_DEV_XID_ERRORS", "Value of the last XID error encountered.",
                                labels=GPU_LABELS)
        xid_count = GaugeMetricFamily("gpupool_gpu_xid_events", "XID events seen since the agent started.",
                                      labels=GPU_LABELS)
        healthy = GaugeMetricFamily("gpupool_gpu_healthy", "1 if the accelerator is healthy.", labels=GPU_LABELS)
        unmanaged = GaugeMetricFamily("gpupool_gpu_unmanaged_memory_mib",
                                      "Memory used by processes gpupool did not start (MiB).", labels=GPU_LABELS)
        for s in snap.samples:
            labels = gpu_labels.get(s.uuid)
            if labels is None:
                continue
            if s.memory_used_mib is not None:
                free.add_metric(labels, max(0.0, infos[s.uuid].memory_mib - s.memory_used_mib))
            if s.energy_j is not None:
                energy.add_metric(labels, s.energy_j * 1000.0)
            xid.add_metric(labels, float(s.last_xid or 0))
            xid_count.add_metric(labels, float(s.xid_errors or 0))
            healthy.add_metric(labels, 1.0 if s.healthy else 0.0)
            unmanaged.add_metric(labels, s.unmanaged_memory_mib)
        yield from (free, energy, xid, xid_count, healthy, unmanaged)
        yield from self._slices(snap, infos)

    def _slices(self, snap: TelemetrySnapshot, infos: dict) -> Iterator[GaugeMetricFamily]:
        alloc = GaugeMetricFamily("gpupool_slice_memory_allocated_mib", "Memory allocated to the slice (MiB).",
                                  labels=SLICE_LABELS)
        used = GaugeMetricFamily("gpupool_slice_memory_used_mib", "Memory the slice's processes use (MiB).",
                                 labels=SLICE_LABELS)
        used_pct = GaugeMetricFamily("gpupool_slice_memory_used_pct",
                                     "Used share of the slice's memory (0-100).", labels=SLICE_LABELS)
        milli = GaugeMetricFamily("gpupool_slice_compute_allocated_milli",
                                  "Compute allocated to the slice (1000 = one accelerator).", labels=SLICE_LABELS)
        sm = GaugeMetricFamily("gpupool_slice_sm_util_pct",
                               "SM utilisation of the slice's processes, share of the whole accelerator (0-100).",
                               labels=SLICE_LABELS)
        sm_of_slice = GaugeMetricFamily("gpupool_slice_sm_util_of_allocation_pct",
                                        "SM utilisation as a share of the slice's compute allocation (0-100).",
                                        labels=SLICE_LABELS)
        for r in snap.slices:
            info = infos.get(r.accelerator_uuid)
            labels = [r.job_id, r.attempt_id, r.queue, r.team, r.user, r.accelerator_uuid,
                      str(info.index) if info else "", self._hostname]
            alloc.add_metric(labels, float(r.memory_mib))
            used.add_metric(labels, max(0.0, r.memory_used_mib))
            used_pct.add_metric(labels, _pct(100.0 * r.memory_used_mib / r.memory_mib) if r.memory_mib else 0.0)
            milli.add_metric(labels, float(r.compute_milli))
            sm.add_metric(labels, _pct(r.sm_util_pct))
            share = r.compute_milli / 10.0
            sm_of_slice.add_metric(labels, _pct(100.0 * (r.sm_util_pct or 0.0) / share) if share else 0.0)
        yield from (alloc, used, used_pct, milli, sm, sm_of_slice)


class AgentExporter:
    """HTTP server for /metrics and /healthz (a daemon thread; ``start()`` returns the port)."""

    def __init__(
        self,
        latest: Callable[[], TelemetrySnapshot | None],
        *,
        hostname: str | None = None,
        host: str = "0.0.0.0",
        port: int = DEFAULT_PORT,
        stale_after_s: float = 30.0,
        health: Callable[[], dict] | None = None,
    ) -> None:
        self.hostname = hostname or socket.gethostname()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(SnapshotCollector(latest, self.hostname))
        self._latest = latest
        self._health = health
        self._stale_after_s = stale_after_s
        self._address = (host, port)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def healthz(self) -> tuple[int, dict]:
        """(HTTP status, body): 503 when no sample is fresher than ``stale_after_s``."""
        snap = self._latest()
        age = None if snap is None else round(time.time() - snap.ts, 3)
        body: dict = {"hostname": self.hostname, "last_sample_age_s": age}
        if self._health is not None:
            try:
                body.update(self._health())
            except Exception as exc:  # a broken health callback reads as unhealthy, not as a 500
                body.update(ok=False, error=f"{type(exc).__name__}: {exc}")
        ok = age is not None and age <= self._stale_after_s and body.get("ok", True)
        body["status"] = "ok" if ok else "stale" if age is None or age > self._stale_after_s else "unhealthy"
        return (200 if ok else 503), body

    def start(self) -> int:
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server API)
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, exporter.render(), CONTENT_TYPE_LATEST)
                elif path == "/healthz":
                    status, body = exporter.healthz()
                    self._send(status, json.dumps(body).encode(), "application/json")
                else:
                    self._send(404, b"not found: try /metrics or /healthz\n", "text/plain")

            def _send(self, status: int, body: bytes, ctype: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        try:
            self._server = ThreadingHTTPServer(self._address, Handler)
        except OSError as exc:
            raise RuntimeError(
                f"cannot serve metrics on {self._address[0]}:{self._address[1]} ({exc.strerror}); "
                "pick another port with --metrics-port"
            ) from None
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="exporter", daemon=True)
        self._thread.start()
        return self._server.server_address[1]

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
