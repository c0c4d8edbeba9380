"""Binarised images, the papers' protocol for a Bernoulli decoder on grey-level data (VampPrior's and
IWAE's code): the training images are binarised dynamically, x ~ Bernoulli(intensity) redrawn for
every batch (`--binarize dynamic`, done by the trainer with the run's seeded RNG), and the test images
once, with a fixed seed (`binarize_fixed`), so every evaluation of every model sees the same binary
test set."""
from __future__ import annotations

import math
from typing import List, Optional, Sequence

import numpy as np
import torch

from ..errors import ConfigError

FIXED_SEED = 0          # the seed of the test set's one binarisation
FIXED_BATCH = 1000      # read in order in batches of this size


def binarize_fixed(split, indices: Sequence[int], seed: int = FIXED_SEED, batch: int = FIXED_BATCH,
                   what: str = "the test split") -> torch.Tensor:
    """The rows `indices` of `split` binarised once: the split is read in order in batches of `batch`
    and each pixel drawn torch.bernoulli(intensity) with one generator seeded `seed`, so an example's
    binary image depends only on the seed and its position in the split, not on which rows are asked
    for. Every pixel read must lie in [0, 1] (a ConfigError names `what` otherwise)."""
    indices = np.asarray(indices, dtype=np.int64)
    want = {int(i): j for j, i in enumerate(indices)}
    out: List[Optional[torch.Tensor]] = [None] * len(indices)
    g = torch.Generator().manual_seed(int(seed))
    last = int(indices.max()) + 1 if len(indices) else 0
    for s in range(0, last, batch):
        xb = split.get_batch(torch.arange(s, min(last, s + batch))).float()
        check_unit_interval(xb, what)
        xb = torch.bernoulli(xb, generator=g)
        for r in range(xb.shape[0]):
            j = want.get(s + r)
            if j is not None:
                out[j] = xb[r]
    return torch.stack(out)


def check_unit_interval(x: torch.Tensor, what: str) -> None:
    lo, hi = float(x.min()), float(x.max())
    if lo < 0 or hi > 1 or not math.isfinite(lo + hi):
        raise ConfigError(f"binarisation draws pixels as Bernoulli(intensity) and needs intensities in "
                          f"[0, 1], but {what} spans [{lo:.4g}, {hi:.4g}]")
