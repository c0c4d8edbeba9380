"""The 2-D benchmark's sample metrics (paper 001, Table 1; SPEC-related 1.3): histogram KL and JSD
between real and generated points, and the mode coverage of 8gaussians.

Exactly as the authors' `calculate_sample_kl` (athaioan/intro_prior, 2D/utils/results.py): both point
sets are binned by np.histogram2d into bins x bins cells over [-2r, 2r]^2 with density=True, so a
histogram P holds densities (count / (n_in_window * cell area)), not probabilities, and

    hist_kl    = F.kl_div(log(Q + 1e-14), P, 'batchmean')
               = sum_{P > 0} P * (log P - log(Q + 1e-14)) / bins             (P real, Q generated)
    jsd_sintro = 0.5 * [F.kl_div(log(P + 1e-14), M) + F.kl_div(log(Q + 1e-14), M)],  M = (P + Q) / 2
               = 0.5 * [KL(M || P) + KL(M || Q)] in the same density units

'batchmean' divides by the 100 rows of the histogram (hence / bins) and kl_div takes 0 * log 0 = 0.
Their "JSD" is the reversed direction of the textbook one (KL from the mixture, not to it) and is not
bounded; it is reported as `jsd_sintro`. `jsd` is the textbook Jensen-Shannon divergence in nats of the
same histograms normalised to probabilities (p = P * cell area: counts over the points inside the
window, as density=True normalises), 0.5 KL(p || m) + 0.5 KL(q || m), between 0 and log 2.

density=True ignores the points outside the window; `fake_in_window` reports the generated share
inside it, so a model that scatters samples far away is visible.
"""
from __future__ import annotations

import math
from typing import Any, Dict, Optional, Sequence

import numpy as np

BINS = 100
N_POINTS = 5000        # real and generated points, as the authors
LOG_EPS = 1e-14        # the authors' offset inside the logarithms
MODE_STDS = 3.0        # a sample is in a mode within 3 standard deviations of its centre
MIN_FAIR_SHARE = 0.25  # a mode counts as covered with at least 1/4 of its fair share 1/M


def _points(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != 2:
        raise ValueError(f"the histogram metrics take (n, 2) points, got shape {x.shape}")
    return x


def window_counts(x, r: float, bins: int = BINS) -> np.ndarray:
    """(bins, bins) counts of the finite points of x inside [-2r, 2r]^2 (np.histogram2d's binning)."""
    x = _points(x)
    x = x[np.isfinite(x).all(axis=1)]
    lim = [-2.0 * r, 2.0 * r]
    counts, _, _ = np.histogram2d(x[:, 0], x[:, 1], bins=bins, range=[lim, lim])
    return counts


def density(counts: np.ndarray, r: float) -> np.ndarray:
    """np.histogram2d's density=True from counts: count / (points in the window * cell area); all
    zeros when no point is in the window (where numpy would give NaN)."""
    total = counts.sum()
    area = (4.0 * r / counts.shape[0]) * (4.0 * r / counts.shape[1])
    return counts / (total * area) if total > 0 else np.zeros_like(counts, dtype=np.float64)


def kl_div_batchmean(log_q: np.ndarray, p: np.ndarray) -> float:
    """torch.nn.functional.kl_div(log_q, p, reduction='batchmean'): sum p * (log p - log_q) over all
    cells (0 where p = 0) divided by the number of rows."""
    p = np.asarray(p, dtype=np.float64)
    terms = np.where(p > 0, p * (np.log(np.where(p > 0, p, 1.0)) - log_q), 0.0)
    return float(terms.sum() / p.shape[0])


def sintro_kl(P: np.ndarray, Q: np.ndarray) -> float:
    """The authors' sample KL of density histograms P (real) and Q (generated)."""
    return kl_div_batchmean(np.log(Q + LOG_EPS), P)


def sintro_jsd(P: np.ndarray, Q: np.ndarray) -> float:
    """The authors' "JSD": 0.5 * (KL(M || P) + KL(M || Q)), M = (P + Q) / 2, their units."""
    M = 0.5 * (P + Q)
    return 0.5 * (kl_div_batchmean(np.log(P + LOG_EPS), M) + kl_div_batchmean(np.log(Q + LOG_EPS), M))


def textbook_jsd(p_counts: np.ndarray, q_counts: np.ndarray) -> float:
    """Jensen-Shannon divergence (nats) of two count histograms, each normalised to sum 1; log 2
    (disjoint) when one of them is empty."""
    sp, sq = p_counts.sum(), q_counts.sum()
    if sp == 0 or sq == 0:
        return math.log(2.0) if sp != sq else 0.0
    p, q = p_counts / sp, q_counts / sq
    m = 0.5 * (p + q)

    def kl(a):
        nz = a > 0
        return float((a[nz] * np.log(a[nz] / m[nz])).sum())
    return 0.5 * kl(p) + 0.5 * kl(q)


def histogram_kl(real, fake, r: float, bins: int = BINS) -> float:
    """The authors' sample KL (Table 1's metric) of 2-D points real and fake in [-2r, 2r]^2."""
    return sintro_kl(density(window_counts(real, r, bins), r), density(window_counts(fake, r, bins), r))


def jsd_sintro(real, fake, r: float, bins: int = BINS) -> float:
    return sintro_jsd(density(window_counts(real, r, bins), r), density(window_counts(fake, r, bins), r))


def jsd(real, fake, r: float, bins: int = BINS) -> float:
    return textbook_jsd(window_counts(real, r, bins), window_counts(fake, r, bins))


def histogram_metrics(real, fake, r: float, bins: int = BINS) -> Dict[str, Any]:
    """hist_kl, jsd_sintro and jsd of one pair of point sets (histograms built once)."""
    cr, cf = window_counts(real, r, bins), window_counts(fake, r, bins)
    P, Q = density(cr, r), density(cf, r)
    return {"hist_kl": sintro_kl(P, Q), "jsd_sintro": sintro_jsd(P, Q), "jsd": textbook_jsd(cr, cf),
            "fake_in_window": float(cf.sum() / max(len(fake), 1)), "n_real": int(len(real)),
            "n_fake": int(len(fake)), "range": float(r), "bins": int(bins)}


def mode_coverage(x, centres: Sequence[Sequence[float]], std: float, n_std: float = MODE_STDS,
                  min_fair_share: float = MIN_FAIR_SHARE) -> Dict[str, Any]:
    """Per mode, the share of the points within n_std * std of its centre; the share in any mode;
    and how many modes hold at least min_fair_share of their fair share 1 / (number of modes)."""
    x = _points(x)
    c = np.asarray(centres, dtype=np.float64)
    d = np.linalg.norm(x[:, None, :] - c[None], axis=2)
    near = np.isfinite(d) & (d <= n_std * std)
    shares = near.mean(axis=0) if len(x) else np.zeros(len(c))
    return {"in_modes": float(near.any(axis=1).mean()) if len(x) else 0.0,
            "mode_shares": [float(s) for s in shares], "min_mode_share": float(shares.min()),
            "modes_covered": int((shares >= min_fair_share / len(c)).sum()), "n_modes": int(len(c))}


def toy2d_metrics(fake, extra: Dict[str, Any], n_real: int = N_POINTS, seed: int = 0,
                  bins: int = BINS) -> Dict[str, Any]:
    """The benchmark's metrics of generated points `fake` (data units) for the dataset described by
    DataInfo.extra["toy2d"] (name, range r, and for 8gaussians the modes): the histogram metrics
    against n_real fresh draws of the data (seeded; the same for every model), and the mode coverage."""
    from ..data.toy2d import reference_points
    fake = _points(fake)
    real = reference_points(extra["name"], n_real, seed)
    out = histogram_metrics(real, fake, float(extra["range"]), bins)
    out.update(dataset=extra["name"], real_seed=int(seed))
    modes: Optional[Dict[str, Any]] = extra.get("modes")
    if modes:
        out.update(mode_coverage(fake, modes["centres"], modes["std"]))
        out["in_modes_real"] = mode_coverage(real, modes["centres"], modes["std"])["in_modes"]
    return out


DESCRIPTION = ("paper 001's Table 1 metrics: histogram KL (hist_kl) and the authors' reversed JSD "
               "(jsd_sintro) of 100 x 100 density histograms over [-2r, 2r]^2, exactly as their "
               "calculate_sample_kl, and the textbook JSD in nats (jsd, <= log 2) of the same "
               "histograms normalised to probabilities; real points are fresh seeded draws of the data")
