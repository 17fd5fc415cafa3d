"""`make demo`: start `gpupool up` on simulated GPUs, run examples/demo-*.yaml, show their progress.

Files named demo-unfit-*.yaml are expected to stay pending with a reason; every other example is
expected to succeed, and the demo-share-* jobs to share one GPU. The pool keeps serving until
Ctrl-C; with DEMO_EXIT=1 the demo stops it and exits 0 when everything went as expected, 1 if not.
Env: DEMO_PORT (default: a free port), DEMO_HOME (default .gpupool-demo/home; wiped first),
DEMO_SIMULATE (default 1x4xH100-80GB), DEMO_TIMEOUT (seconds to wait for the examples).
DEMO_FULL=1 then also runs a small pre-train, a LoRA fine-tune of it, and serves the result with
the adapter through vLLM (scripts/demo_workloads.py; several minutes on CPU).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rich.console import Console  # noqa: E402
from rich.markup import escape  # noqa: E402
from rich.panel import Panel  # noqa: E402
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn  # noqa: E402

from controlplane.cli.render import fmt_reason, jobs_table, progress_fraction  # noqa: E402
from controlplane.cli.specfile import load_spec_file  # noqa: E402
from controlplane.client import GpupoolClient, GpupoolError  # noqa: E402

console = Console(highlight=False)
FINAL = {"succeeded", "failed", "cancelled"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(path: Path, n: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


class Demo:
    def __init__(self) -> None:
        self.home = Path(os.environ.get("DEMO_HOME") or ROOT / ".gpupool-demo" / "home").resolve()
        self.port = int(os.environ.get("DEMO_PORT") or free_port())
        self.url = f"http://127.0.0.1:{self.port}"
        self.shape = os.environ.get("DEMO_SIMULATE", "1x4xH100-80GB")
        self.timeout = float(os.environ.get("DEMO_TIMEOUT", "180"))
        self.up_log = self.home / "up.log"
        self.proc: subprocess.Popen | None = None

    # -- the pool ------------------------------------------------------------------------
    def start_pool(self) -> str:
        """Start `gpupool up` in a fresh home; returns the admin token once the node is ready."""
        marker = self.home / ".gpupool-demo-home"
        if self.home.exists() and any(self.home.iterdir()) and not marker.exists():
            raise SystemExit(f"DEMO_HOME {self.home} is not empty and not a demo home; "
                             "refusing to wipe it")
        shutil.rmtree(self.home, ignore_errors=True)
        self.home.mkdir(parents=True)
        marker.touch()
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("GPUPOOL_") or k in ("GPUPOOL_REQUIRE_POSTGRES",)}
        env.update({"GPUPOOL_HOME": str(self.home), "PYTHONUNBUFFERED": "1",
                    "GPUPOOL_SCHEDULER_INTERVAL_S": "0.5", "GPUPOOL_HEARTBEAT_INTERVAL_S": "2"})
        with open(self.up_log, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "controlplane.cli.main", "up", "--port", str(self.port),
                 "--simulate", self.shape], cwd=ROOT, env=env, stdout=log,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        config = self.home / "config.yaml"
        deadline = time.monotonic() + 120
        with console.status(f"starting gpupool up --simulate {self.shape} on port {self.port} ..."):
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise SystemExit(self.die(f"gpupool up exited with code {self.proc.returncode}"))
                if "gpupool is up" in self.up_log.read_text(errors="replace") and config.exists():
                    import yaml

                    return yaml.safe_load(config.read_text())["token"]
                time.sleep(0.3)
        raise SystemExit(self.die("gpupool up did not come up within 120 s"))

    def die(self, message: str) -> int:
        console.print(f"[red]--- {self.up_log} ---[/]\n{escape(tail(self.up_log, 30))}")
        console.print(f"[bold red]demo failed:[/] {escape(message)}")
        self.stop_pool()
        return 1

    def stop_pool(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    # -- the examples --------------------------------------------------------------------
    def submit_examples(self, client: GpupoolClient) -> dict[str, dict]:
        """Submit every examples/demo-*.yaml; job id -> {"file", "expect", "job"}."""
        jobs = {}
        for path in sorted((ROOT / "examples").glob("demo-*.yaml")):
            spec = load_spec_file(path)
            job = client.submit_job(spec, idempotency_key=f"demo-{path.stem}")
            expect = "pending" if path.stem.startswith("demo-unfit") else "succeeded"
            jobs[job["id"]] = {"file": path.name, "expect": expect, "job": job}
            console.print(f"submitted [bold]{escape(path.name)}[/] -> job {escape(str(job['id']))}")
        return jobs

    def follow(self, client: GpupoolClient, jobs: dict[str, dict]) -> None:
        """Progress bars until every job is final or (expected pending) shows its reason."""
        progress = Progress(SpinnerColumn(), TextColumn("{task.description}", markup=True),
                            BarColumn(), TextColumn("{task.percentage:>3.0f}%"), console=console)
        deadline = time.monotonic() + self.timeout
        with progress:
            tasks = {jid: progress.add_task(info["job"]["name"], total=None) for jid, info in jobs.items()}
            while True:
                settled = 0
                for jid, info in jobs.items():
                    job = info["job"] = client.get_job(jid)
                    status = job["status"]
                    frac = 1.0 if status == "succeeded" else progress_fraction(job.get("progress"))
                    note = f" - {escape(fmt_reason(job))}" if status == "pending" and fmt_reason(job) else ""
                    progress.update(tasks[jid], total=1.0 if frac is not None else None,
                                    completed=frac or 0,
                                    description=f"{escape(job['name']):<24} [bold]{status}[/]{note}")
                    if status in FINAL or (info["expect"] == "pending" and job.get("pending_reason")):
                        settled += 1
                if settled == len(jobs):
                    return
                if time.monotonic() > deadline:
                    console.print(f"[red]timed out after {self.timeout:.0f} s[/]")
                    return
                time.sleep(0.5)

    def verdict(self, jobs: dict[str, dict]) -> list[str]:
        """What did not go as expected (empty list: all good)."""
        problems = []
        for info in jobs.values():
            job = info["job"]
            if job["status"] != info["expect"]:
                problems.append(f"{info['file']}: {job['status']}, expected {info['expect']}"
                                + (f" ({job.get('status_reason')})" if job.get("status_reason") else ""))
            if info["expect"] == "pending" and not (job.get("pending_reason") or {}).get("message"):
                problems.append(f"{info['file']}: pending without a reason")
        shared = {s["accelerator_uuid"] for info in jobs.values() if info["file"].startswith("demo-share")
                  for m in info["job"].get("placement") or [] for s in m.get("slices") or []}
        n_share = sum(1 for i in jobs.values() if i["file"].startswith("demo-share"))
        if n_share and len(shared) != 1:
            problems.append(f"the {n_share} demo-share jobs ran on {len(shared)} GPUs, expected 1")
        return problems


def main() -> int:
    demo = Demo()
    try:
        token = demo.start_pool()
        with GpupoolClient(demo.url, token) as client:
            jobs = demo.submit_examples(client)
            demo.follow(client, jobs)
            items = [client.get_job(jid) for jid in jobs]
            for jid, job in zip(jobs, items, strict=True):
                jobs[jid]["job"] = job
            console.print(jobs_table(items, show_team=False, width=console.width))
            problems = demo.verdict(jobs)
            if os.environ.get("DEMO_FULL") == "1":
                from demo_workloads import run_workloads  # scripts/ is on sys.path as the script's directory

                problems += run_workloads(client, demo.home, lambda line: console.print(escape(line)))
            unfit = [i["job"] for i in jobs.values() if i["expect"] == "pending"]
            for job in unfit:
                console.print(f"[yellow]{escape(job['name'])}[/] is pending because: "
                              f"{escape(fmt_reason(job))}")
            shares = [i["job"] for i in jobs.values() if i["file"].startswith("demo-share")]
            if shares and shares[0].get("placement"):
                gpu = shares[0]["placement"][0]["slices"][0]["accelerator_uuid"]
                console.print(f"the {len(shares)} demo-share jobs shared GPU {escape(gpu)}")
        console.print(Panel("\n".join([
            f"API        {demo.url}/api/v1   (OpenAPI {demo.url}/docs)",
            f"dashboard  {demo.url}/",
            f"admin token  [bold]{escape(token)}[/]",
            f"CLI        GPUPOOL_HOME={demo.home} .venv/bin/gpupool jobs",
            f"logs       {demo.home / 'logs'}"]), title="gpupool demo", expand=False))
        if problems:
            for p in problems:
                console.print(f"[bold red]not as expected:[/] {escape(p)}")
        else:
            console.print("[bold green]all demo jobs behaved as expected[/]")
        if os.environ.get("DEMO_EXIT") == "1":
            with GpupoolClient(demo.url, token) as client:
                for info in jobs.values():
                    if info["job"]["status"] not in FINAL:
                        try:
                            client.cancel_job(info["job"]["id"])
                        except GpupoolError:
                            pass
            demo.stop_pool()
            return 1 if problems else 0
        console.print("serving until Ctrl-C ...")
        assert demo.proc is not None
        demo.proc.wait()
        return demo.die("gpupool up stopped by itself")
    except KeyboardInterrupt:
        console.print("stopping ...")
        demo.stop_pool()
        return 0
    except GpupoolError as e:
        return demo.die(str(e))
    except SystemExit:
        raise
    finally:
        demo.stop_pool()


if __name__ == "__main__":
    sys.exit(main())
