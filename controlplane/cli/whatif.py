"""`gpupool whatif`: how many GPUs a workload needs exclusive, partitioned, pooled, right-sized.

Runs here, on files (no server): the Alibaba v2023 pod lists (``--trace``) or the pool's own
job history (``--history``, JSONL; docs/utilisation.md). The replay engine is imported when
the command runs, so the rest of the CLI starts fast.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from controlplane.cli.errors import CliError, console, err_console, handle_errors
from controlplane.whatif.modes import EXTRA_MODES, MODES



def register(app: typer.Typer) -> None:
    app.command("whatif")(whatif)


def _load(trace: Path | None, history: Path | None, nodes: Path | None, usage: Path | None,
          seed: int, compress: float):
    from controlplane.whatif.history import load_history
    from controlplane.whatif.trace import default_paths, load_trace

    if (trace is None) == (history is None):
        raise CliError("give one workload: --trace POD_LIST.csv or --history JOBS.jsonl")
    if history is not None:
        if nodes is None:
            raise CliError("--history needs --nodes NODES.csv (sn,cpu_milli,memory_mib,gpu,model"
                           "[,gpu_memory_mib]): the cluster the jobs ran on")
        workload = load_history(history, nodes)
    else:
        folder = usage or default_paths(trace)[1]
        if not folder.is_dir():
            raise CliError(f"no GenAI usage folder at {folder}; pass --usage DIR "
                           "(alibaba-genai-2026) for the right-sized mode")
        workload = load_trace(trace, nodes, folder, seed)
    return workload.compressed(compress)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _seconds(x: float | None) -> str:
    if x is None or (isinstance(x, float) and math.isinf(x)):
        return "-"
    return f"{x:.0f} s" if x < 3600 else f"{x / 3600:.1f} h"


def report_table(report: dict) -> Table:
    """The per-mode figures as a rich table."""
    w = report["workload"]
    table = Table(title=f"{w['name']}: {w['jobs']} jobs over {w['span_days']} days; "
                        f"p95 wait <= {report['p95_wait_bound_s']:g} s")
    for column in ("mode", "GPUs", "vs excl.", "p95 wait", "mean wait", "alloc GPU",
                   "alloc mem", "used GPU", "never fit", "unplaced"):
        table.add_column(column, justify="left" if column == "mode" else "right",
                         no_wrap=column == "mode")
    base = report["modes"].get("exclusive", {}).get("gpus")
    for mode, f in report["modes"].items():
        if not f.get("gpus"):
            table.add_row(mode, "none found", *["-"] * 6, str(f["never_fit"]), "-")
            continue
        table.add_row(mode, str(f["gpus"]), f"{base / f['gpus']:.2f}x" if base else "-",
                      _seconds(f["p95_wait_s"]), _seconds(f["mean_wait_s"]),
                      _pct(f["allocated_gpu_fraction"]), _pct(f["allocated_memory_fraction"]),
                      _pct(f["used_gpu_fraction"]), str(f["never_fit"]), str(f["unplaced"]))
    return table


@handle_errors
def whatif(
    trace: Path = typer.Option(None, "--trace", help="Alibaba v2023 pod list with times "
                               "(openb_pod_list_*.csv)"),
    history: Path = typer.Option(None, "--history", help="job history, one JSON job per line"),
    nodes: Path = typer.Option(None, "--nodes", help="node CSV; for --trace default: the "
                               "node list beside it"),
    usage: Path = typer.Option(None, "--usage", help="GenAI 2026 usage folder (trace "
                               "right-sizing); default: alibaba-genai-2026 beside the trace's"),
    modes: str = typer.Option(",".join(MODES), "--modes", help="comma-separated modes (also: "
                              "oversubscribed, memory sized to mean use)"),
    p95_wait: float = typer.Option(600.0, "--p95-wait", help="bound on the 95th-percentile "
                                   "queue wait, seconds"),
    compress: float = typer.Option(1.0, "--compress", help="divide arrival times by this "
                                   "(run times kept): more jobs at once"),
    policy: str = typer.Option("gpupool", "--policy", help="scheduler policy"),
    seed: int = typer.Option(42, "--seed", help="seed of the per-pod usage draw (trace)"),
    fmt: str = typer.Option("table", "--format", help="table or json"),
    plots: Path = typer.Option(None, "--plots", help="write PNG plots into this folder"),
) -> None:
    """Replay a workload through the scheduler and size the cluster for every mode."""
    from controlplane.core.snapshot import Snapshot
    from controlplane.scheduler import SchedulerConfig, schedule
    from controlplane.whatif.report import whatif as run_whatif
    from controlplane.whatif.workload import WorkloadError

    if fmt not in ("table", "json"):
        raise CliError(f"--format must be table or json (got {fmt!r})")
    chosen = [m.strip() for m in modes.split(",") if m.strip()]
    unknown = [m for m in chosen if m not in MODES + EXTRA_MODES]
    if unknown or not chosen:
        raise CliError(f"unknown mode(s) {', '.join(unknown) or '(none given)'}; "
                       f"known: {', '.join(MODES + EXTRA_MODES)}")
    if p95_wait < 0 or compress <= 0:
        raise CliError("--p95-wait must be >= 0 and --compress above 0")
    try:
        schedule(Snapshot([]), SchedulerConfig(policy=policy))  # an unknown policy says so
        workload = _load(trace, history, nodes, usage, seed, compress)
    except (ValueError, WorkloadError) as exc:
        raise CliError(str(exc)) from None
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=err_console, transient=fmt == "json") as bar:
        tasks = {m: bar.add_task(f"{m}: waiting", total=None) for m in chosen}

        def progress_of(mode: str):
            def tick(label: str, done: int, total: int) -> None:
                bar.update(tasks[mode], description=f"{mode}: {label}", completed=done, total=total)
            return tick

        report, runs = run_whatif(workload, chosen, policy, p95_wait, progress_of)
        for m in chosen:
            f = report["modes"][m]
            bar.update(tasks[m], description=f"{m}: {f.get('gpus') or 'no'} GPUs",
                       completed=1, total=1)
    if plots is not None:
        from controlplane.whatif.plots import write_plots

        report["plots"] = [str(p) for p in write_plots(report, runs, plots)]
    if fmt == "json":
        console.print_json(json.dumps(report))
    else:
        console.print(report_table(report))
        for note in report["workload"]["notes"]:
            console.print(f"note: {note}")
        if report["ratios"]:
            console.print("GPUs needed, exclusive / mode: " + ", ".join(
                f"{k.split('/')[1]} {v}x" for k, v in report["ratios"].items() if v))
