"""The bundled, offline datasets: scikit-learn's handwritten digits and the synthetic clusters."""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from .base import DataBundle, image_bundle, vector_bundle

# The synthetic clustered benchmark: three isotropic 2-D Gaussian modes (K = 3 in the paper).
CLUSTER_CENTRES = np.array([[0.0, 2.0], [-1.8, -1.0], [1.8, -1.0]])
CLUSTER_STDS = np.array([0.30, 0.25, 0.35])
CLUSTER_SIZE = 3000


def make_clusters(n: int = CLUSTER_SIZE, seed: int = 0):
    """(x (n, 2), labels (n,)): n points, equal thirds from the three modes, shuffled by seed."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % len(CLUSTER_CENTRES))
    x = CLUSTER_CENTRES[labels] + rng.standard_normal((n, 2)) * CLUSTER_STDS[labels, None]
    return x.astype(np.float32), labels


def load_clusters(test_fraction: float, split_seed: int, standardize: bool = True,
                  limit: Optional[int] = None) -> DataBundle:
    x, labels = make_clusters(CLUSTER_SIZE, seed=split_seed)
    extra = {"centres": CLUSTER_CENTRES.tolist(), "stds": CLUSTER_STDS.tolist()}
    return vector_bundle("clusters", x, test_fraction, split_seed, standardize, extra, limit,
                         labels=labels)


def load_digits(test_fraction: float, split_seed: int, limit: Optional[int] = None) -> DataBundle:
    """scikit-learn's 1797 handwritten digits, 8x8 grey levels 0..16 scaled to [0, 1], with their
    labels 0..9."""
    from sklearn.datasets import load_digits as _load
    raw = _load()
    images = raw.images.astype(np.float32) / 16.0
    labels = np.asarray(raw.target, dtype=np.int64)
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    x = torch.from_numpy(images)[:, None]
    return image_bundle("digits", x, test_fraction, split_seed, labels=labels)
