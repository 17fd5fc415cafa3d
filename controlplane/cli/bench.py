"""`gpupool bench`: replay an Alibaba GPU trace with a policy (`trace`), build a model-constrained
variant of one (`constrain`), or replay a scheduler dump and check its decision (`replay`).

Mounted by the main CLI as `app.add_typer(bench_app, name="bench")`; also runs on its own:
`python -m controlplane.cli.bench trace --nodes N.csv --pods P.csv --policy fgd --json`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

bench_app = typer.Typer(help="Benchmarks of the scheduler.", no_args_is_help=True)


@bench_app.callback()
def _group() -> None:
    """Benchmarks of the scheduler (keeps each command a sub-command)."""


def parse_seeds(text: str) -> list[int]:
    """'42-51' or '42,45,50' or '42' -> list of ints (raises ValueError with the bad part)."""
    seeds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        try:
            if sep:
                a, b = int(lo), int(hi)
                if b < a:
                    raise ValueError
                seeds.extend(range(a, b + 1))
            else:
                seeds.append(int(part))
        except ValueError:
            raise ValueError(f"bad seed range {part!r}; use e.g. 42-51 or 42,43") from None
    if not seeds:
        raise ValueError("no seeds given; use e.g. --seeds 42-51")
    return seeds


@bench_app.command("trace")
def trace(
    nodes: Path = typer.Option(..., "--nodes", help="node CSV (sn,cpu_milli,memory_mib,gpu,model)"),
    pods: Path = typer.Option(..., "--pods", help="pod CSV (name,cpu_milli,memory_mib,num_gpu,gpu_milli[,gpu_spec])"),
    policy: str = typer.Option("gpupool", "--policy", help="firstfit, binpack, spread, bestfit, fgd, gpupool"),
    seeds: str = typer.Option("42-51", "--seeds", help="seed range, e.g. 42-51"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
    limit: int = typer.Option(0, "--limit", help="replay only the first N pods of each run (smoke tests)"),
) -> None:
    """Replay the trace as the FGD paper does (1.3x capacity, seeded shuffle, no departures)."""
    from controlplane.scheduler import policies, replay, tracefile

    err = Console(stderr=True, soft_wrap=True)
    try:
        seed_list = parse_seeds(seeds)
        policies.profile(policy)
        node_rows = tracefile.load_nodes(nodes)
        pod_rows = tracefile.load_pods(pods)
    except ValueError as exc:  # TraceError is a ValueError
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    results = []
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=err, transient=as_json) as bar:
        task = bar.add_task(f"{policy} seed {seed_list[0]}", total=1)
        for seed in seed_list:
            bar.update(task, description=f"{policy} seed {seed}", completed=0)

            def tick(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            results.append(replay.run(node_rows, pod_rows, policy, seed, progress=tick,
                                      limit=limit or None))
    summary = replay.summarize(results, policy, pods.stem)
    if as_json:
        sys.stdout.write(json.dumps(summary) + "\n")
        return
    out = Console()
    out.print(f"policy {policy}, trace {pods.stem}, seeds {seed_list[0]}..{seed_list[-1]}")
    for arrived, value in summary["unallocated_gpu_pct"].items():
        text = "not reached" if value is None else f"{value}% of GPUs unallocated"
        out.print(f"  arrived {arrived:>3}%: {text}")
    frag = summary["frag_pct_of_capacity"]["100"]
    out.print(f"  fragmentation at 100%: {'not reached' if frag is None else f'{frag}% of capacity'}")
    out.print(f"  {summary['placements_per_s']} placements/s")


@bench_app.command("constrain")
def constrain(
    nodes: Path = typer.Option(..., "--nodes", help="node CSV of the cluster (its model mix)"),
    pods: Path = typer.Option(..., "--pods", help="pod CSV to constrain"),
    share: float = typer.Option(..., "--share", help="share of GPU pods to constrain, e.g. 0.2"),
    seed: int = typer.Option(..., "--seed", help="seed of the choice of pods and models"),
    mix: str = typer.Option("capacity", "--mix", help="capacity, sqrt or nodes: how models are drawn"),
    out: Path = typer.Option(..., "--out", help="pod CSV to write"),
) -> None:
    """Write a variant of a trace where a share of the GPU pods may use only some GPU models."""
    from controlplane.scheduler import tracefile, variants

    err = Console(stderr=True, soft_wrap=True)
    try:
        built = variants.constrain(tracefile.load_pods(pods), tracefile.load_nodes(nodes), share,
                                   seed, mix)
        tracefile.write_pods(out, built)
    except (ValueError, OSError) as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    limited = sum(1 for p in built if p.gpu_spec)
    Console(soft_wrap=True).print(f"wrote {out}: {limited} of {sum(1 for p in built if p.num_gpu)} GPU pods "
                    f"constrained (share {share}, mix {mix}, seed {seed})")


@bench_app.command("replay")
def replay_dump(
    file: Path = typer.Argument(..., help="scheduler dump (JSON) written by the scheduling loop"),
) -> None:
    """Replay a dumped cycle offline; with a recorded decision, say whether it is identical."""
    import time

    from controlplane.scheduler import dump, schedule

    err = Console(stderr=True, soft_wrap=True)
    try:
        snapshot, config, recorded = dump.load_dump(json.loads(file.read_text()))
        started = time.perf_counter()
        decision = schedule(snapshot, config)
    except (OSError, ValueError) as exc:  # DumpError and JSONDecodeError are ValueErrors
        err.print(f"[red]error:[/red] {file}: {exc}")
        raise typer.Exit(2) from None
    seconds = time.perf_counter() - started
    out = Console(soft_wrap=True)
    codes: dict[str, int] = {}
    for reason in decision.pending.values():
        codes[str(reason.code)] = codes.get(str(reason.code), 0) + 1
    out.print(f"{len(snapshot.nodes)} nodes, {len(snapshot.pending)} pending, "
              f"{len(snapshot.running)} running; policy {config.policy}; {seconds:.3f} s")
    out.print(f"placed {len(decision.placements)}, preempted {len(decision.preemptions)}, "
              f"pending {len(decision.pending)}"
              + (" (" + ", ".join(f"{c} {n}" for c, n in sorted(codes.items())) + ")" if codes else ""))
    if recorded is None:
        out.print("the dump has no recorded decision to compare with")
        return
    diffs = dump.differences(recorded, decision)
    if not diffs:
        out.print("identical to the recorded decision")
        return
    out.print("differs from the recorded decision:")
    for line in diffs:
        out.print(f"  {line}")
    raise typer.Exit(1)


app = bench_app  # the name the main CLI imports


if __name__ == "__main__":
    typer.main.get_command(bench_app)(prog_name="gpupool bench")
