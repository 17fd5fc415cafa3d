"""Spec's data set -> memory-mapped train/validation shards, built once and read by every rank.

The shards live under ``dataset.cache_dir`` (default ``output/data``) in a directory named by
a fingerprint of the source files (or hub id), the data settings, the tokenizer and seq_len, so
a restart or a second job with the same inputs reuses them. Global rank 0 builds them while
the other ranks wait; a node that cannot see rank 0's output builds its own copy (its local
rank 0). Every ``round(1 / validation_fraction)``-th document goes to validation (document 0
always does), so the split needs no second pass over a streamed source.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections import Counter
from typing import Any, Iterator

from workloads.data.corpus import DataError, data_files, records
from workloads.data.examples import examples
from workloads.data.shards import ShardWriter, TokenShards, read_manifest, token_dtype, write_manifest
from workloads.hub import is_hub_id, load_hub_dataset, local_dir

FORMAT_VERSION = 2


def _is_hub(data: str, ds: Any) -> bool:
    return ds.format == "hub" or (not os.path.exists(data) and not local_dir(data) and is_hub_id(data)
                                  and not os.path.isabs(data))


def source_rows(data: str, ds: Any, *, cache: str | None = None, needs: str | None = None
                ) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, row) of every row of the local data or hub data set ``data``, streamed."""
    if _is_hub(data, ds):
        rows = load_hub_dataset(data, split=ds.split, config_name=ds.config_name, revision=ds.revision,
                                cache=cache, streaming=ds.streaming, needs=needs)
        return ((f"{data}[{ds.split}]", row) for row in rows)
    if not os.path.exists(data) and needs:
        raise DataError(f"data: {data} does not exist on this node; run first: {needs}")
    return records(data, fmt=ds.format, streaming=ds.streaming)


def source_identity(data: str, ds: Any) -> list[Any]:
    if _is_hub(data, ds):
        return ["hub", data, ds.revision, ds.config_name, ds.split]
    return [(os.path.abspath(f), os.path.getsize(f), os.stat(f).st_mtime_ns) for f in data_files(data)]


def tokenizer_identity(tok: Any) -> str:
    backend = getattr(tok, "backend_tokenizer", None)
    body = backend.to_str() if backend is not None else json.dumps(sorted(tok.get_vocab().items()))
    extra = [tok.bos_token_id, tok.eos_token_id, tok.pad_token_id, getattr(tok, "chat_template", None)]
    return hashlib.sha256((body + json.dumps(extra, default=str)).encode()).hexdigest()


def fingerprint(data: str, ds: Any, tok: Any, seq_len: int, layout: str) -> str:
    settings = ds.model_dump(mode="json", exclude={"cache_dir", "streaming", "tokenizer", "seed"})
    blob = json.dumps([FORMAT_VERSION, source_identity(data, ds), settings, tokenizer_identity(tok), seq_len, layout],
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def build_shards(root: str, rows: Iterator[tuple[str, dict[str, Any]]], tok: Any, ds: Any, seq_len: int,
                 layout: str, fp: str) -> dict[str, Any]:
    """Tokenise ``rows`` once into ``root`` (written to a temporary directory, then renamed)."""
    tmp = f"{root}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    stats: Counter = Counter()
    pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    kw = dict(seq_len=seq_len, shard_tokens=ds.shard_tokens, dtype=token_dtype(len(tok)), pad_id=pad,
              layout=layout, stats=stats)
    writers = {s: ShardWriter(tmp, s, **kw) for s in ("train", "validation")}
    period = max(round(1 / ds.validation_fraction), 2)
    for i, (ids, mask) in enumerate(examples(rows, tok, ds, stats)):
        if any(mask):
            writers["validation" if i % period == 0 else "train"].add(ids, mask)
            stats["tokens"] += len(ids)
    splits = {s: w.close() for s, w in writers.items()}
    if stats["kept"] < 2 or not splits["train"]["rows"]:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DataError(f"data: {stats['kept']} usable document(s) after filtering "
                        f"({stats['dropped_short']} shorter than min_chars, {stats['dropped_duplicates']} duplicates); "
                        "need at least 2")
    manifest = {"format": FORMAT_VERSION, "fingerprint": fp, "seq_len": seq_len,
                "dtype": str(token_dtype(len(tok))().dtype), "layout": layout, "splits": splits,
                "stats": {**stats, "train_rows": splits["train"]["rows"],
                          "validation_rows": splits["validation"]["rows"]}}
    write_manifest(tmp, manifest)
    try:
        os.replace(tmp, root)
    except OSError:  # another builder won the race: keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
    return read_manifest(root) or manifest


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def load_splits(data: str, ds: Any, tok: Any, seq_len: int, output_dir: str, *, rank: int = 0, local_rank: int = 0,
                layout: str = "stream", cache: str | None = None, needs: str | None = None
                ) -> tuple[TokenShards, TokenShards, dict[str, Any]]:
    """(train rows, validation rows, stats): built once on rank 0 (per node without shared output)."""
    fp = _broadcast(fingerprint(data, ds, tok, seq_len, layout) if rank == 0 else None)  # rank 0's inputs name it
    root = os.path.join(ds.cache_dir or os.path.join(output_dir, "data"), str(fp))
    os.makedirs(os.path.dirname(root), exist_ok=True)
    for builder in ("global", "node"):
        manifest = read_manifest(root)
        turn = rank == 0 if builder == "global" else local_rank == 0
        if manifest is None and turn:
            manifest = build_shards(root, source_rows(data, ds, cache=cache, needs=needs), tok, ds, seq_len,
                                    layout, str(fp))
        _barrier()
    manifest = read_manifest(root)
    if manifest is None:
        raise DataError(f"data: the shards under {root} were not built on this node")
    return TokenShards(root, manifest, "train"), TokenShards(root, manifest, "validation"), {
        **manifest["stats"], "shards": root}


def _broadcast(value: Any) -> Any:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]
    return value


def pretrain_tokenizer(data: str, ds: Any, output_dir: str, is_main: bool, *, model_dir: str | None = None,
                       cache: str | None = None, needs: str | None = None) -> Any:
    """``dataset.tokenizer``, else the starting model's own (``model.path``), else a BPE trained on the data.

    A trained tokenizer is saved under ``output/tokenizer`` and reused on restart, so a resumed
    run tokenises exactly as before. Rank 0 trains it; other ranks load it (or train the same one).
    """
    from workloads.data.corpus import clean, field_of
    from workloads.data.tokenizer import check_matches_model, load_tokenizer, train_tokenizer

    if ds.tokenizer or model_dir:
        tok = load_tokenizer(ds.tokenizer or model_dir or "", "dataset.tokenizer" if ds.tokenizer else "model.path",
                             cache=cache, needs=needs)
        if model_dir:
            check_matches_model(tok, model_dir)
        return tok
    saved = os.path.join(output_dir, "tokenizer")

    def texts() -> Iterator[str]:
        for where, row in source_rows(data, ds, cache=cache, needs=needs):
            yield clean(field_of(row, ds.text_field, where))

    if not os.path.isfile(os.path.join(saved, "tokenizer.json")) and is_main:
        train_tokenizer(texts(), ds.vocab_size, saved)
    _barrier()
    if os.path.isfile(os.path.join(saved, "tokenizer.json")):
        return load_tokenizer(saved, "tokenizer")
    return train_tokenizer(texts(), ds.vocab_size, None)  # output not shared with rank 0: same data, same BPE
