"""Memory of a training rank while the corpus grows 10x: shards are pre-tokenised once and each rank
reads only its rows through memory maps, so a rank's memory stays flat.

Writes a synthetic corpus of N and 10N documents, builds the shards (``load_splits``), then runs one
rank of a 2-rank world in a fresh process that reads every row of its share of one epoch; reports
that process's peak resident memory (VmHWM) and private memory (RssAnon). Prints one JSON line.
    .venv/bin/python benchmarks/workloads_shards.py [--docs 20000] [--seq-len 512]
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

READER = """
import json, sys, time
sys.path.insert(0, {root!r})
from workloads.data.blocks import BatchOrder
from workloads.data.shards import TokenShards, read_manifest
root = {shards!r}
m = read_manifest(root)
rows = TokenShards(root, m, "train")
order = BatchOrder(len(rows), 8, seed=0, rank=1, world=2)
t0, n = time.monotonic(), 0
for i in range(len(rows) // 16):
    b = rows.batch(order.indices(i))
    n += int(b["input_ids"].numel())
status = dict(l.split(":", 1) for l in open("/proc/self/status") if ":" in l)
kib = lambda k: int(status[k].split()[0])
print(json.dumps({{"tokens_read": n, "read_s": round(time.monotonic() - t0, 2), "peak_rss_mib": round(kib("VmHWM") / 1024, 1),
                   "rss_anon_mib": round(kib("RssAnon") / 1024, 1), "rss_file_mib": round(kib("RssFile") / 1024, 1)}}))
"""

WORDS = [f"w{i}" for i in range(3000)]


def corpus(path: Path, docs: int) -> None:
    r = random.Random(docs)
    with open(path, "w") as f:
        for _ in range(docs):
            f.write(" ".join(r.choice(WORDS) for _ in range(r.randint(80, 200))) + "\n\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=20000)
    ap.add_argument("--seq-len", type=int, default=512)
    a = ap.parse_args()
    from workloads.data.corpus import records
    from workloads.data.pipeline import load_splits
    from workloads.data.tokenizer import train_tokenizer
    from workloads.spec_parts import DatasetSpec

    out: dict = {"benchmark": "workloads_shards", "seq_len": a.seq_len}
    with tempfile.TemporaryDirectory() as tmp:
        for scale in (1, 10):
            src = Path(tmp) / f"corpus-{scale}.txt"
            corpus(src, a.docs * scale)
            if scale == 1:
                tok = train_tokenizer((row["text"] for _, row in records(str(src))), 4000)
            t0 = time.monotonic()
            _, _, stats = load_splits(str(src), DatasetSpec(min_chars=1, dedupe=False), tok, a.seq_len,
                                      str(Path(tmp) / f"out-{scale}"))
            build_s = time.monotonic() - t0
            proc = subprocess.run([sys.executable, "-c", READER.format(root=str(ROOT), shards=stats["shards"])],
                                  capture_output=True, text=True, check=True)
            out[f"x{scale}"] = {"documents": a.docs * scale, "tokens": stats["tokens"], "build_s": round(build_s, 1),
                                **json.loads(proc.stdout.strip().splitlines()[-1])}
    out["peak_rss_growth"] = round(out["x10"]["peak_rss_mib"] / out["x1"]["peak_rss_mib"], 3)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
