"""Token blocks for causal LM training and a deterministic, resumable batch order."""

from __future__ import annotations

import random
from typing import Any


def to_blocks(texts: list[str], tokenizer: Any, seq_len: int) -> Any:
    """Concatenate ``texts`` (each ended by EOS) and cut them into ``[n, seq_len]`` token blocks."""
    import torch

    eos = tokenizer.eos_token_id
    ids: list[int] = []
    for enc in tokenizer(texts, add_special_tokens=False)["input_ids"]:
        ids.extend(enc)
        if eos is not None:
            ids.append(eos)
    n = len(ids) // seq_len
    if n == 0:
        raise ValueError(f"data: only {len(ids)} tokens, fewer than one block of seq_len {seq_len}")
    return torch.tensor(ids[: n * seq_len], dtype=torch.long).view(n, seq_len)


class BatchOrder:
    """Micro-batch ``i`` of the whole run, the same after a restart (epochs reshuffled per seed)."""

    def __init__(self, n_blocks: int, batch_size: int, seed: int, rank: int = 0, world: int = 1) -> None:
        self.n, self.bs, self.seed, self.rank, self.world = n_blocks, batch_size, seed, rank, world
        self._epoch = -1
        self._perm: list[int] = []

    def indices(self, i: int) -> list[int]:
        """Block indices of global micro-batch ``i`` for this rank (wrapping over epochs)."""
        per_epoch = max(self.n // (self.bs * self.world), 1)
        epoch, within = divmod(i, per_epoch)
        if epoch != self._epoch:
            self._perm = list(range(self.n))
            random.Random(self.seed * 1_000_003 + epoch).shuffle(self._perm)
            self._epoch = epoch
        start = (within * self.world + self.rank) * self.bs
        return [self._perm[(start + k) % self.n] for k in range(self.bs)]
