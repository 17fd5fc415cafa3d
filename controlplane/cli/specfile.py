"""Read a job spec file (YAML or JSON) and check it client-side, naming the bad field or line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from controlplane.cli.errors import CliError


def parse_spec_text(text: str, source: str = "<spec>") -> dict[str, Any]:
    """Parse and validate one spec; returns the mapping to send (as written, plus the estimated
    GPU request of a packaged spec that gives none: the server does not read model files)."""
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise CliError(f"{source}: invalid YAML{where}: {problem}") from None
    if not docs:
        raise CliError(f"{source}: the file is empty; a job spec needs at least 'name' and 'command'")
    if len(docs) > 1:
        raise CliError(f"{source}: holds {len(docs)} YAML documents; submit one job per file")
    data = docs[0]
    if not isinstance(data, dict):
        raise CliError(f"{source}: a job spec must be a mapping (name: ..., command: ...), "
                       f"not a {type(data).__name__}")
    return validate_spec(data, source)


def validate_spec(data: dict[str, Any], source: str = "<spec>") -> dict[str, Any]:
    """Check the spec with the same pydantic models the server uses, estimating a packaged
    spec's GPU request here, where the model is; returns the mapping to submit."""
    from workloads.specs import parse_job_spec

    try:
        spec = parse_job_spec(data)
    except ValidationError as e:
        raise CliError(f"{source}: {format_validation_error(e)}") from None
    given = data.get("resources") if isinstance(data.get("resources"), dict) else {}
    if spec.kind != "custom" and "gpu" not in given:
        r = spec.resources
        data = {**data, "resources": {**given, "gpu": r.gpu, "gpu_memory_mib": r.gpu_memory_mib, "nodes": r.nodes}}
    return data


def format_validation_error(err: ValidationError) -> str:
    """'resources.gpu: must be ...; name: Field required' — fields named as users write them."""
    parts = []
    for item in err.errors():
        loc = [str(x) for x in item.get("loc", ())]
        # drop the discriminator tag pydantic inserts ("custom", "pretrain", ...)
        if loc and loc[0] in {"custom", "pretrain", "finetune", "evaluate", "inference"}:
            loc = loc[1:]
        field = ".".join(loc)
        msg = item.get("msg", "invalid")
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        if item.get("type") == "extra_forbidden":
            msg = "unknown field"
        if item.get("type") == "union_tag_invalid":
            ctx = item.get("ctx") or {}
            field = "kind"
            msg = f"unknown kind {ctx.get('tag')!r}; use one of {ctx.get('expected_tags')}"
        parts.append(f"{field}: {msg}" if field else msg)
    return "; ".join(parts)


def load_spec_file(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.exists():
        raise CliError(f"no such file: {p}")
    if p.is_dir():
        raise CliError(f"{p} is a directory; give a job spec file (.yaml)")
    try:
        text = p.read_text()
    except UnicodeDecodeError:
        raise CliError(f"{p}: not a text file") from None
    return parse_spec_text(text, str(p))
