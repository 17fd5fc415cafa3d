"""Resolves the relative paths of a spec (data, models) the same way on every node.

A relative path is tried against the job's working directory, then ``GPUPOOL_DATA_ROOT``, then the
gpupool checkout (so ``examples/corpus/...`` works on a local pool); absolute paths are kept.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def resolve_path(path: str | None) -> str | None:
    if not path or os.path.isabs(path):
        return path
    roots = [os.getcwd(), os.environ.get("GPUPOOL_DATA_ROOT"), str(REPO_ROOT)]
    for root in filter(None, roots):
        candidate = os.path.join(root, path)
        if os.path.exists(candidate):
            return candidate
    return path


def resolve_spec_paths(spec: object) -> object:
    """A copy of ``spec`` with its input paths resolved (output stays as given)."""
    update: dict[str, object] = {}
    for name in ("data", "base_model", "model_path", "adapter_path"):
        value = getattr(spec, name, None)
        if isinstance(value, str):
            update[name] = resolve_path(value)
    ds = getattr(spec, "dataset", None)
    if ds is not None and ds.tokenizer:
        update["dataset"] = ds.model_copy(update={"tokenizer": resolve_path(ds.tokenizer)})
    return spec.model_copy(update=update)  # type: ignore[attr-defined]
