"""Improved precision and recall of generated samples (Kynkäänniemi et al. 2019).

Each set's manifold is the union of balls around its feature vectors, each ball's radius being the
distance to the k-th nearest other vector of the same set (k = 3 by default). Precision is the
fraction of generated samples inside the real manifold (fidelity); recall is the fraction of real
samples inside the generated manifold (coverage, diversity). Distances are Euclidean, computed with
torch.cdist in blocks of at most BLOCK_ELEMENTS distances (rows and columns both chunked), so memory
is bounded whatever the set sizes; the time is quadratic in them, so `precision_recall` can use a
seeded subset of at most `max_rows` vectors per set (the evaluation caps both sets at MAX_ROWS)."""
from __future__ import annotations

from typing import Dict, Optional

import numpy as np
import torch

# distances held at once (float64: 32 MB), whatever the number of vectors
BLOCK_ELEMENTS = 1 << 22
# vectors per set the evaluation uses (the method paper's 50,000): an exact k-NN manifold is O(N^2)
MAX_ROWS = 50_000


def _as_tensor(x, device=None) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x), dtype=torch.float64)
    if t.dim() != 2:
        raise ValueError(f"features must be a 2-D array (N, D), got shape {tuple(t.shape)}")
    return t.to(device) if device is not None else t


def _blocks(n_rows: int, n_cols: int, chunk: Optional[int]):
    """(rows, columns) per block: `chunk` rows (default 1024) and as many columns as keep the block
    within BLOCK_ELEMENTS."""
    rows = max(1, min(n_rows, chunk or 1024))
    return rows, max(1, min(n_cols, BLOCK_ELEMENTS // rows))


def knn_radii(features, k: int = 3, chunk: Optional[int] = None, device=None) -> torch.Tensor:
    """Distance from each vector to its k-th nearest neighbour among the others of the same set."""
    f = _as_tensor(features, device)
    n = f.shape[0]
    if n <= k:
        raise ValueError(f"k-nearest-neighbour radii with k = {k} need more than {k} vectors, got {n}")
    rows, cols = _blocks(n, n, chunk)
    out = torch.empty(n, dtype=torch.float64)
    for s in range(0, n, rows):
        best = None    # the k + 1 smallest distances so far: the vector itself (0) and k others
        for c in range(0, n, cols):
            d = torch.cdist(f[s:s + rows], f[c:c + cols])
            d = d.topk(min(k + 1, d.shape[1]), dim=1, largest=False).values
            best = d if best is None else torch.cat([best, d], 1).topk(k + 1, dim=1, largest=False).values
        out[s:s + rows] = best[:, k].cpu()
    return out


def inside_manifold(query, reference, radii: torch.Tensor, chunk: Optional[int] = None,
                    device=None) -> torch.Tensor:
    """Boolean (Nq,): whether each query vector lies within some reference vector's ball."""
    q, r = _as_tensor(query, device), _as_tensor(reference, device)
    if q.shape[1] != r.shape[1]:
        raise ValueError(f"feature sizes differ: {q.shape[1]} and {r.shape[1]}")
    radii = torch.as_tensor(radii, dtype=torch.float64).to(r.device)
    rows, cols = _blocks(q.shape[0], r.shape[0], chunk)
    out = torch.empty(q.shape[0], dtype=torch.bool)
    for s in range(0, q.shape[0], rows):
        inside = torch.zeros(min(rows, q.shape[0] - s), dtype=torch.bool, device=r.device)
        for c in range(0, r.shape[0], cols):
            inside |= (torch.cdist(q[s:s + rows], r[c:c + cols]) <= radii[None, c:c + cols]).any(dim=1)
            if bool(inside.all()):     # every row of the block is inside: the rest cannot change it
                break
        out[s:s + rows] = inside.cpu()
    return out


def _subset(x, max_rows: Optional[int], seed: int):
    x = np.asarray(x)
    if max_rows is None or x.shape[0] <= max_rows:
        return x
    idx = np.sort(np.random.default_rng(seed).choice(x.shape[0], max_rows, replace=False))
    return x[idx]


def precision_recall(real, fake, k: int = 3, chunk: Optional[int] = None,
                     max_rows: Optional[int] = None, seed: int = 0, device=None) -> Dict[str, float]:
    """{"precision", "recall"} of fake against real feature vectors (k-NN manifolds). With
    `max_rows`, a larger set is replaced by a seeded random subset of max_rows vectors, and the result
    then also says how many were used ("n_real_used", "n_fake_used")."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if max_rows is not None and (isinstance(max_rows, bool) or not isinstance(max_rows, int)
                                 or max_rows <= k):
        raise ValueError(f"max_rows must be an integer > k = {k}, got {max_rows!r}")
    n_real, n_fake = len(real), len(fake)
    real, fake = _subset(real, max_rows, seed), _subset(fake, max_rows, seed + 1)
    precision = inside_manifold(fake, real, knn_radii(real, k, chunk, device), chunk, device).double().mean()
    recall = inside_manifold(real, fake, knn_radii(fake, k, chunk, device), chunk, device).double().mean()
    out = {"precision": float(precision), "recall": float(recall)}
    if len(real) < n_real or len(fake) < n_fake:
        out.update(n_real_used=len(real), n_fake_used=len(fake))
    return out
