"""Improved precision and recall of generated samples (Kynkäänniemi et al. 2019).

Each set's manifold is the union of balls around its feature vectors, each ball's radius being the
distance to the k-th nearest other vector of the same set (k = 3 by default). Precision is the
fraction of generated samples inside the real manifold (fidelity); recall is the fraction of real
samples inside the generated manifold (coverage, diversity). Distances are Euclidean, computed with
torch.cdist in chunks so memory stays bounded."""
from __future__ import annotations

from typing import Dict

import numpy as np
import torch


def _as_tensor(x) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x), dtype=torch.float64)
    if t.dim() != 2:
        raise ValueError(f"features must be a 2-D array (N, D), got shape {tuple(t.shape)}")
    return t


def knn_radii(features, k: int = 3, chunk: int = 1024) -> torch.Tensor:
    """Distance from each vector to its k-th nearest neighbour among the others of the same set."""
    f = _as_tensor(features)
    n = f.shape[0]
    if n <= k:
        raise ValueError(f"k-nearest-neighbour radii with k = {k} need more than {k} vectors, got {n}")
    out = torch.empty(n, dtype=torch.float64)
    for s in range(0, n, chunk):
        d = torch.cdist(f[s:s + chunk], f)
        # k + 1 smallest: the vector itself (distance 0) and its k nearest others
        out[s:s + chunk] = d.topk(k + 1, dim=1, largest=False).values[:, k]
    return out


def inside_manifold(query, reference, radii: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """Boolean (Nq,): whether each query vector lies within some reference vector's ball."""
    q, r = _as_tensor(query), _as_tensor(reference)
    if q.shape[1] != r.shape[1]:
        raise ValueError(f"feature sizes differ: {q.shape[1]} and {r.shape[1]}")
    out = torch.empty(q.shape[0], dtype=torch.bool)
    for s in range(0, q.shape[0], chunk):
        d = torch.cdist(q[s:s + chunk], r)
        out[s:s + chunk] = (d <= radii[None, :]).any(dim=1)
    return out


def precision_recall(real, fake, k: int = 3, chunk: int = 1024) -> Dict[str, float]:
    """{"precision", "recall"} of fake against real feature vectors (k-NN manifolds)."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    precision = inside_manifold(fake, real, knn_radii(real, k, chunk), chunk).double().mean()
    recall = inside_manifold(real, fake, knn_radii(fake, k, chunk), chunk).double().mean()
    return {"precision": float(precision), "recall": float(recall)}
