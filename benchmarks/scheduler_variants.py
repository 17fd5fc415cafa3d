"""Build the model-constrained trace variants of docs/scheduler.md (seeded; same files every time).

Each variant restricts a share of a visible trace's GPU pods to subsets of the cluster's GPU
models (`controlplane.scheduler.variants`); `role` says whether the default policy was tuned on
it ("tune") or never looked at while tuning ("held-out"). Prints one JSON line.
Run: .venv/bin/python benchmarks/scheduler_variants.py --out build/variants
(one variant: gpupool bench constrain --nodes N.csv --pods P.csv --share 0.1 --mix uniform --seed 101 --out F.csv)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from controlplane.scheduler import tracefile, variants

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "alibaba-gpu-v2023"

# name, visible trace it is built from, share of GPU pods constrained, mix, seed, role
VARIANTS = [
    ("default-u10", "default", 0.10, "uniform", 101, "tune"),
    ("default-c25", "default", 0.25, "capacity", 102, "tune"),
    ("multigpu40-n20", "multigpu40", 0.20, "nodes", 103, "tune"),
    ("default-c5", "default", 0.05, "capacity", 201, "held-out"),
    ("default-f10", "default", 0.10, "family", 202, "held-out"),
    ("default-s20", "default", 0.20, "sqrt", 203, "held-out"),
    ("default-f25", "default", 0.25, "family", 204, "held-out"),
    ("default-u33", "default", 0.33, "uniform", 205, "held-out"),
    ("default-n33", "default", 0.33, "nodes", 206, "held-out"),
    ("gpushare40-u20", "gpushare40", 0.20, "uniform", 207, "held-out"),
    ("gpushare80-f10", "gpushare80", 0.10, "family", 208, "held-out"),
    ("multigpu20-s25", "multigpu20", 0.25, "sqrt", 209, "held-out"),
    ("multigpu50-f20", "multigpu50", 0.20, "family", 210, "held-out"),
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--out", type=Path, default=Path("build/variants"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    nodes = tracefile.load_nodes(args.data / "openb_node_list_gpu_node.csv")
    written = []
    for name, base, share, mix, seed, role in VARIANTS:
        pods = tracefile.load_pods(args.data / f"openb_pod_list_{base}.csv")
        path = args.out / f"openb_pod_list_{name}.csv"
        tracefile.write_pods(path, variants.constrain(pods, nodes, share, seed, mix))
        written.append({"name": name, "role": role, "file": str(path)})
    print(json.dumps({"benchmark": "scheduler_variants", "variants": written}))


if __name__ == "__main__":
    main()
