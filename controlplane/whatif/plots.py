"""PNG plots of a what-if: allocation and queue over time per mode, GPUs needed per mode."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from controlplane.whatif.report import ModeRun

DAY = 86400.0


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def mode_plot(run: ModeRun, title: str, path: Path) -> Path | None:
    """Allocated and used GPU (and memory, in GPUs' worth) above, the queue below."""
    result = run.sizing.result
    if result is None or not result.timeline.t:
        return None
    plt = _pyplot()
    line = result.timeline
    days = [(t - line.t[0]) / DAY for t in line.t]
    per_gpu_mib = result.gpu_memory_mib / result.gpus
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 4.8), sharex=True,
                                      gridspec_kw={"height_ratios": [2, 1]})
    top.step(days, line.allocated_gpu, where="post", label="allocated GPU", lw=0.8)
    top.step(days, [m / per_gpu_mib for m in line.allocated_memory_mib], where="post",
             label="allocated memory (GPUs' worth)", lw=0.8, alpha=0.8)
    top.step(days, line.used_gpu, where="post", label="used GPU (mean compute)", lw=0.8)
    top.axhline(result.gpus, color="black", ls="--", lw=0.8, label=f"cluster: {result.gpus} GPUs")
    top.set_ylabel("GPUs")
    top.legend(loc="upper left", fontsize=7, ncol=2)
    top.set_title(f"{title}: {run.mode}", fontsize=10)
    bottom.step(days, line.queued_jobs, where="post", color="tab:red", lw=0.8)
    bottom.set_ylabel("jobs waiting")
    bottom.set_xlabel("days")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def gpus_plot(report: dict, title: str, path: Path) -> Path:
    """GPUs each mode needs, with the ratio to exclusive on each bar."""
    plt = _pyplot()
    modes = [m for m, f in report["modes"].items() if f.get("gpus")]
    gpus = [report["modes"][m]["gpus"] for m in modes]
    base = report["modes"].get("exclusive", {}).get("gpus")
    fig, ax = plt.subplots(figsize=(6, 3.2))
    colours = ["tab:gray", "tab:purple", "tab:blue", "tab:green", "tab:olive"]
    bars = ax.bar(modes, gpus, color=colours[:len(modes)])
    for bar, value in zip(bars, gpus):
        label = f"{value}" + (f"\n{base / value:.2f}x" if base else "")
        ax.annotate(label, (bar.get_x() + bar.get_width() / 2, value), ha="center", va="bottom",
                    fontsize=8)
    ax.set_ylabel("GPUs needed")
    ax.set_ylim(0, max(gpus, default=1) * 1.3)
    ax.set_title(f"{title}: p95 wait <= {report['p95_wait_bound_s']:g} s", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def write_plots(report: dict, runs: Sequence[ModeRun], folder: str | Path) -> list[Path]:
    """All plots of one what-if into ``folder`` (created); the files written."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    title = report["workload"]["name"]
    name = slug(title)
    paths = [gpus_plot(report, title, folder / f"whatif-{name}-gpus.png")]
    for run in runs:
        path = mode_plot(run, title, folder / f"whatif-{name}-{run.mode}.png")
        if path:
            paths.append(path)
    return paths
