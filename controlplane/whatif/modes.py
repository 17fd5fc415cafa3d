"""The four ways of giving GPUs to the same jobs, as the request each job makes.

- ``exclusive``: a fraction is rounded up to one whole GPU; nothing is shared.
- ``static-partitions``: each GPU is split MIG-like (``partitions``); a job takes one instance
  of the smallest profile that holds its request (``gpus`` whole GPUs: that many 7g).
- ``pooled``: gpupool's fractional slices, as requested.
- ``right-sized``: a request of at most one GPU per member becomes the ``rightsize``
  recommendation from the job's observed use (never more than it asked for); multi-GPU
  members and jobs without observed use keep their request.
- ``oversubscribed`` (not in the default set; a what-if beyond what gpupool enforces today):
  right-sized compute, but memory sized to the mean use plus the margin instead of the peak,
  as if GPU memory could be oversubscribed (peaks spilling to host memory).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from controlplane.core.resources import WHOLE, Constraints, Request
from controlplane.whatif import rightsize
from controlplane.whatif.partitions import PROFILES, profile_for
from controlplane.whatif.workload import Job

MODES = ("exclusive", "static-partitions", "pooled", "right-sized")
EXTRA_MODES = ("oversubscribed",)


@dataclass(frozen=True, slots=True)
class ModeRequest:
    """A job's request in one mode and the GPU share it asks for (for queue-demand figures)."""

    request: Request
    gpu_share: float  # physical GPUs over all members


def _models(req: Request, cards: dict[str, int]) -> tuple[str, ...]:
    return req.constraints.models or tuple(sorted(cards))


def _with(req: Request, **changes) -> Request:
    fields = dict(cpu_milli=req.cpu_milli, memory_mib=req.memory_mib, gpus=0, gpu_milli=0,
                  gpu_memory_mib=0, constraints=req.constraints, gang=req.gang)
    fields.update(changes)
    return Request(**fields)


def _share(req: Request) -> float:
    return req.total_gpu_milli / WHOLE


def exclusive(job: Job, cards: dict[str, int]) -> ModeRequest:
    req = job.request
    if req.is_fractional:
        req = _with(req, gpus=1)
    return ModeRequest(req, _share(req))


def pooled(job: Job, cards: dict[str, int]) -> ModeRequest:
    return ModeRequest(job.request, _share(job.request))


def static_partitions(job: Job, cards: dict[str, int]) -> ModeRequest | None:
    """One instance of the smallest fitting profile per allowed model (None: none fits)."""
    req = job.request
    models = [m for m in _models(req, cards) if m in cards]
    if req.gpus:
        return ModeRequest(_with(req, gpus=req.gpus,
                                 constraints=Constraints(models=tuple(f"{m}/7g" for m in models))),
                           _share(req))
    names, shares = [], []
    for m in models:
        memory = req.gpu_memory_mib or cards[m] * req.gpu_milli // WHOLE
        g = profile_for(req.gpu_milli, memory, cards[m])
        if g is not None:
            names.append(f"{m}/{g}g")
            shares.append(PROFILES[g][0] / 7)
    if not names:
        return None
    return ModeRequest(_with(req, gpus=1, constraints=Constraints(models=tuple(names))),
                       min(shares) * req.gang)


def right_sized(job: Job, cards: dict[str, int], by_mean_memory: bool = False) -> ModeRequest:
    req, usage = job.request, job.usage
    if usage is None or req.gpus > 1:
        return pooled(job, cards)
    if by_mean_memory:
        usage = replace(usage, memory_peak_mib=usage.memory_mean_mib)
    card = min(cards.get(m, min(cards.values())) for m in _models(req, cards))
    try:
        rec = rightsize.recommend_basis(usage, rightsize.DEFAULT_MARGIN, card)
    except rightsize.NotEnoughUsage:
        return pooled(job, cards)
    asked_milli = WHOLE if req.gpus else req.gpu_milli
    asked_memory = card if req.gpus else (req.gpu_memory_mib or card * req.gpu_milli // WHOLE)
    milli, memory = min(rec.gpu_milli, asked_milli), min(rec.gpu_memory_mib, asked_memory)
    sized = _with(req, gpu_milli=milli, gpu_memory_mib=memory)
    return ModeRequest(sized, max(milli / WHOLE, memory / card) * req.gang)


def oversubscribed(job: Job, cards: dict[str, int]) -> ModeRequest:
    return right_sized(job, cards, by_mean_memory=True)


def request_in(mode: str, job: Job, cards: dict[str, int]) -> ModeRequest | None:
    """``job``'s request in ``mode`` (None: no instance of static partitions can hold it)."""
    if mode not in MODES + EXTRA_MODES:
        raise ValueError(f"unknown mode {mode!r}; known: {', '.join(MODES + EXTRA_MODES)}")
    return {"exclusive": exclusive, "static-partitions": static_partitions, "pooled": pooled,
            "right-sized": right_sized, "oversubscribed": oversubscribed}[mode](job, cards)
