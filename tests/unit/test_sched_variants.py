"""Constrained trace variants: seeded, the asked share of GPU pods and of GPU demand, feasible
models only, and `gpupool bench constrain` writes a file `bench trace` reads back."""

from __future__ import annotations

from collections import Counter

import pytest
from typer.testing import CliRunner

from controlplane.cli.bench import bench_app
from controlplane.scheduler import tracefile, variants
from controlplane.scheduler.tracefile import TraceNode, TracePod

NODES = [TraceNode(f"g{i}", 96000, 393216, 8, "G2") for i in range(6)] + [
    TraceNode(f"t{i}", 104000, 524288, 2, "T4") for i in range(10)] + [
    TraceNode(f"v{i}", 32000, 131072, 4, "V100M16") for i in range(3)] + [
    TraceNode(f"w{i}", 96000, 786432, 8, "V100M32") for i in range(2)]


def pods():
    out = [TracePod(f"c{i:03d}", 4000, 8192, 0, 0) for i in range(50)]
    out += [TracePod(f"f{i:03d}", 4000, 8192, 1, 500) for i in range(200)]
    out += [TracePod(f"w{i:03d}", 8000, 16384, 1, 1000) for i in range(200)]
    out += [TracePod(f"m{i:03d}", 64000, 65536, 8, 1000) for i in range(40)]
    return out


@pytest.mark.parametrize("mix", variants.MIXES)
@pytest.mark.parametrize("share", [0.05, 0.2, 0.33])
def test_share_of_pods_and_demand_and_feasible_models(mix, share):
    built = variants.constrain(pods(), NODES, share, seed=7, mix=mix)
    gpu = [p for p in built if p.num_gpu]
    limited = [p for p in gpu if p.gpu_spec]
    assert len(limited) == round(share * len(gpu))
    demand = sum(p.gpu_demand for p in limited) / sum(p.gpu_demand for p in gpu)
    assert demand == pytest.approx(share, abs=0.02)
    assert not any(p.gpu_spec for p in built if not p.num_gpu)
    for p in limited:  # an 8-GPU pod never gets T4 (2 per node) or V100M16 (4 per node) alone
        assert set(p.gpu_spec) <= {"G2", "T4", "V100M16", "V100M32"}
        if p.num_gpu == 8:
            assert set(p.gpu_spec) <= {"G2", "V100M32"}
    if mix == "family":
        assert Counter(p.gpu_spec for p in limited)[("V100M16", "V100M32")] > 0
    assert built == variants.constrain(pods(), NODES, share, seed=7, mix=mix)
    assert built != variants.constrain(pods(), NODES, share, seed=8, mix=mix)


def test_rare_models_draw_more_the_further_down_the_mixes():
    def t4_share(mix):
        limited = [p for p in variants.constrain(pods(), NODES, 0.33, 3, mix) if p.gpu_spec]
        return sum("T4" in p.gpu_spec for p in limited) / len(limited)

    assert t4_share("capacity") < t4_share("nodes")


def test_constrain_command_writes_a_trace_that_loads_back(tmp_path):
    nodes, pods_csv, out = tmp_path / "n.csv", tmp_path / "p.csv", tmp_path / "v.csv"
    nodes.write_text("sn,cpu_milli,memory_mib,gpu,model\n" + "".join(
        f"{n.name},{n.cpu_milli},{n.memory_mib},{n.gpus},{n.model}\n" for n in NODES))
    tracefile.write_pods(pods_csv, pods())
    args = ["constrain", "--nodes", str(nodes), "--pods", str(pods_csv), "--share", "0.2",
            "--seed", "1", "--mix", "family", "--out", str(out)]
    result = CliRunner().invoke(bench_app, args)
    assert result.exit_code == 0, result.output
    assert "88 of 440 GPU pods constrained" in result.output
    assert tracefile.load_pods(out) == variants.constrain(pods(), NODES, 0.2, 1, "family")
    bad = CliRunner().invoke(bench_app, [*args[:-2], "--out", str(out), "--mix", "nope"])
    assert bad.exit_code == 2 and "unknown mix 'nope'" in bad.output
