"""Pure formatting of admin objects (queues' policies, tokens, users, scheduler settings) into rich
tables, and parsing of the admin commands' values (GPUs, sizes, priorities); no I/O."""

from __future__ import annotations

from rich.console import Group
from rich.markup import escape
from rich.table import Table

from controlplane.cli.render import fmt_gpus_milli, fmt_mib, fmt_time
from controlplane.schemas import BootstrapTokenInfo, Queue, SchedulerSettings, Token, User
from workloads.specs import PRIORITY_CLASSES
SIZE_UNITS = {"mib": 1, "m": 1, "gib": 1024, "g": 1024, "tib": 1024 * 1024, "t": 1024 * 1024}
NONE_WORDS = ("none", "null", "unlimited", "-")


class BadValue(ValueError):
    """A value the user typed that is not what the option takes (the message says what is)."""


def is_none(text: str) -> bool:
    return text.strip().lower() in NONE_WORDS


def parse_gpus(text: str, option: str) -> int:
    """'2' / '0.5' GPUs -> milli."""
    try:
        value = float(text)
    except ValueError:
        raise BadValue(f"{option} {text!r}: use a number of GPUs like 2 or 0.5") from None
    if not 0 <= value <= 2_000_000:
        raise BadValue(f"{option} {text!r}: must be between 0 and 2000000 GPUs")
    return int(round(value * 1000))


def parse_mib(text: str, option: str) -> int:
    """'80GiB' / '512MiB' / '1.5TiB' / '81920' (MiB) -> MiB."""
    raw = text.strip().lower().replace(" ", "")
    unit = next((u for u in sorted(SIZE_UNITS, key=len, reverse=True) if raw.endswith(u)), "")
    try:
        value = float(raw[: len(raw) - len(unit)] if unit else raw) * SIZE_UNITS.get(unit, 1)
    except ValueError:
        raise BadValue(f"{option} {text!r}: use a size like 80GiB, 512MiB or a number of MiB") from None
    if not 0 <= value <= 2**40:
        raise BadValue(f"{option} {text!r}: must be between 0 and 2^40 MiB")
    return int(round(value))


def parse_priority(text: str, option: str) -> int:
    """'high' / '100' -> the job priority number."""
    name = text.strip().lower()
    if name in PRIORITY_CLASSES:
        return PRIORITY_CLASSES[name]
    try:
        return int(name)
    except ValueError:
        raise BadValue(f"{option} {text!r}: use {', '.join(PRIORITY_CLASSES)} or a whole number") from None


def parse_pairs(items: list[str], option: str, value) -> dict:  # noqa: ANN001
    """['H100-80GB=4', ...] -> {'H100-80GB': value('4')}."""
    out = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise BadValue(f"{option} {item!r}: use NAME=VALUE")
        out[key.strip()] = value(raw.strip(), f"{option} {key.strip()}")
    return out


def _limit(value: int | None, fmt) -> str:  # noqa: ANN001
    return "none" if value is None else fmt(value)


def queue_policy_table(queues: list[Queue]) -> Table:
    """Per queue: quotas (compute, per model, GPU memory) and what members' jobs may ask for."""
    table = Table(header_style="bold", caption="compute in GPUs (1 = 1000 milli); priority names: "
                  "low -100, normal 0, high 100, critical 1000", caption_justify="left")
    for col in ("QUEUE", "GUARANTEE", "LIMIT", "PER MODEL", "GPU MEMORY", "MAX PRIORITY",
                "NON-PREEMPTIBLE", "MAX MIN_RUNTIME", "MAX PENDING"):
        table.add_column(col, no_wrap=True)
    for q in queues:
        models = ", ".join(f"{m} {fmt_gpus_milli(v)}" for m, v in sorted(q.model_guarantees_milli.items()))
        memory = f"{fmt_mib(q.memory_guarantee_mib) if q.memory_guarantee_mib else '0'} / " \
                 f"{_limit(q.memory_limit_mib, fmt_mib)}"
        table.add_row(escape(f"{q.team}/{q.name}"), fmt_gpus_milli(q.guarantee_milli),
                      _limit(q.limit_milli, fmt_gpus_milli), escape(models or "-"), memory,
                      _limit(q.max_priority, str), "allowed" if q.allow_non_preemptible else "refused",
                      _limit(q.max_min_runtime_s, lambda s: f"{s:g} s"), _limit(q.max_pending_jobs, str))
    return table


def bootstrap_tokens_table(items: list[BootstrapTokenInfo]) -> Table:
    table = Table(header_style="bold")
    for col in ("ID", "NAME", "STATE", "SINGLE USE", "NAME PATTERN", "EXPIRES", "USED"):
        table.add_column(col, no_wrap=True)
    for t in items:
        table.add_row(t.id, escape(t.name), t.state, "yes" if t.single_use else "no",
                      escape(t.name_pattern or "-"), fmt_time(t.expires_at) if t.expires_at else "never",
                      fmt_time(t.used_at))
    return table


def tokens_table(items: list[Token]) -> Table:
    table = Table(header_style="bold")
    for col in ("ID", "KIND", "NAME", "OWNER", "CREATED", "EXPIRES"):
        table.add_column(col, no_wrap=True)
    for t in items:
        owner = t.user or (f"node #{t.node_id}" if t.node_id else "-")
        table.add_row(t.id, t.kind, escape(t.name), escape(owner), fmt_time(t.created_at),
                      fmt_time(t.expires_at) if t.expires_at else "never")
    return table


def users_table(items: list[User]) -> Table:
    table = Table(header_style="bold")
    for col in ("NAME", "TEAM", "ROLE", "STATE"):
        table.add_column(col, no_wrap=True)
    for u in items:
        table.add_row(escape(u.name), escape(u.team), u.role, "disabled" if u.disabled else "enabled")
    return table


def scheduler_view(cfg: SchedulerSettings) -> Group:
    """The policy in use, where it comes from, and each plugin's weight."""
    table = Table(header_style="bold")
    table.add_column("PLUGIN")
    table.add_column("WEIGHT", justify="right")
    for plugin in cfg.plugins:
        weight = cfg.effective_weights.get(plugin)
        table.add_row(plugin, "-" if weight is None else f"{weight:g}")
    return Group(f"policy [bold]{escape(cfg.policy)}[/] ({_source(cfg)})", table,
                 f"known policies: {', '.join(sorted(cfg.policies))}")


def _source(cfg: SchedulerSettings) -> str:
    if cfg.source == "settings":
        return "from the server's settings"
    weights = "explicit weights" if cfg.weights is not None else "its own weights"
    return f"{weights}, set by {escape(cfg.updated_by or '?')} at {fmt_time(cfg.updated_at)}"
