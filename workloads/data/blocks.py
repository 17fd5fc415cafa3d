"""A deterministic, resumable order of training rows: rank r of w reads its own part of each batch."""

from __future__ import annotations

import numpy as np


class BatchOrder:
    """Micro-batch ``i`` of the whole run, the same after a restart (epochs reshuffled per seed)."""

    def __init__(self, n_blocks: int, batch_size: int, seed: int, rank: int = 0, world: int = 1) -> None:
        self.n, self.bs, self.seed, self.rank, self.world = n_blocks, batch_size, seed, rank, world
        self._epoch = -1
        self._perm = np.zeros(0, dtype=np.int64)

    def indices(self, i: int) -> list[int]:
        """Row indices of global micro-batch ``i`` for this rank (wrapping over epochs)."""
        per_epoch = max(self.n // (self.bs * self.world), 1)
        epoch, within = divmod(i, per_epoch)
        if epoch != self._epoch:
            perm = np.random.default_rng(self.seed * 1_000_003 + epoch).permutation(self.n)
            self._perm = perm.astype(np.int32 if self.n < 2**31 else np.int64)  # 4 bytes a row
            self._epoch = epoch
        start = (within * self.world + self.rank) * self.bs
        return [int(self._perm[(start + k) % self.n]) for k in range(self.bs)]
