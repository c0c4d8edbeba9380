"""The Inception Score (Salimans et al. 2016): exp(E_x KL(p(y|x) || p(y))), over `splits` equal
parts of the samples (the mean and standard deviation over the parts are reported), from class
logits. For uniform predictions p(y|x) = p(y) and the score is exactly 1; its maximum is the number
of classes."""
from __future__ import annotations

from typing import Tuple

import numpy as np
import torch


def inception_score(logits, splits: int = 10) -> Tuple[float, float]:
    """(mean, std) of the Inception Score of (N, classes) logits over `splits` parts.

    Parts are rows [k N / splits, (k + 1) N / splits), as in the original code; the std is the
    population std over the parts (numpy's default), as there. Computed in float64 from
    log-softmax, so confident predictions do not underflow."""
    lg = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    if lg.dim() != 2 or lg.shape[1] < 2:
        raise ValueError(f"logits must be (N, classes) with at least 2 classes, got {tuple(lg.shape)}")
    if isinstance(splits, bool) or not isinstance(splits, int) or splits < 1:
        raise ValueError(f"splits must be a positive integer, got {splits!r}")
    n = lg.shape[0]
    if n < splits:
        raise ValueError(f"the Inception Score over {splits} splits needs at least {splits} samples, "
                         f"got {n}")
    if not torch.isfinite(lg).all():
        raise ValueError("the logits contain NaN or inf")
    log_p = torch.log_softmax(lg, dim=1)
    scores = []
    for k in range(splits):
        part = log_p[k * n // splits:(k + 1) * n // splits]
        log_py = torch.logsumexp(part, dim=0) - np.log(part.shape[0])       # log of the mean p(y|x)
        kl = (part.exp() * (part - log_py)).sum(dim=1).mean()
        scores.append(float(torch.exp(kl)))
    return float(np.mean(scores)), float(np.std(scores))
