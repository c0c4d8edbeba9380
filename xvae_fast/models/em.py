"""EM for a diagonal Gaussian mixture in torch: scikit-learn's GaussianMixture(covariance_type="diag",
init_params="kmeans") algorithm, step for step, on the device of the data.

What it computes (sklearn/mixture/_base.py and _gaussian_mixture.py, scikit-learn 1.x):
- the M-step `_estimate_gaussian_parameters`: nk = sum_n r_nc + 10 eps (so an empty component has
  a finite mean 0 and variance reg_covar instead of 0/0), means = r^T x / nk, variances =
  r^T x^2 / nk - means^2 + reg_covar; weights = nk / N after the initialisation, nk / sum(nk) after
  each later M-step;
- the E-step `_estimate_log_prob_resp`: log p(x_n) = logsumexp_c(log w_c + log N(x_n; mu_c, var_c))
  and the responsibilities; the lower bound is the mean log p(x_n) of the E-step, i.e. under the
  parameters *before* the M-step that follows it;
- the loop of `BaseMixture.fit_predict`: for n_iter = 1..max_iter: E-step, M-step, stop when
  |lower_bound - previous lower_bound| < tol (the first iteration compares with -inf); over n_init
  restarts the largest final lower bound wins (a tie: the earlier restart), and the winner's
  n_iter and converged flag are reported; `EMFit.log_likelihood` is `score(x)` of the winner;
- the initialisation: one-hot responsibilities from the labels of a k-means with k = n_components,
  one k-means per restart, the restarts drawing in turn from one random stream. `kmeans_torch`
  (the default) is scikit-learn's KMeans procedure in torch with its own draws; `kmeans_sklearn`
  is scikit-learn's KMeans on GaussianMixture's RandomState, which reproduces its fit exactly. On
  the (60000, 64) MNIST codes with 64 clusters on 2 CPU threads both cost ~1.5-2.5 s per restart
  (100-165 Lloyd iterations; ~40% of the torch fit); `kmeans_torch` runs on the data's device
  (a GPU too) with no copy to the host.

Why float64: the M-step's variances r^T x^2 / nk - means^2 cancel (a tight component far from the
origin keeps few of float32's 7 digits, and can come out negative), the sums run over N = 60000
rows, and the convergence test compares a change of the mean log-likelihood (~ -150 per latent for
MNIST) with tol = 1e-3, i.e. 7e-6 relative, near float32's resolution. So all EM arithmetic is
float64 whatever the dtype of the latents; only the k-means distances of the initialisation are
float32 (a rounding error there can at worst move a near tie to the other cluster).

The E-step is the library's fused `mixture_log_prob` op (float64 kernels on CPU and CUDA) when the
compiled extension has a kernel for the device: at N = 60000, K = C = 64 float64 on 2 CPU threads
it takes ~30-35 ms (log p and responsibilities) against ~110-180 ms for scikit-learn's expanded
matmul form in torch (x^2 @ prec^T - 2 x @ (mu prec)^T + sum(mu^2 prec) with a hand-written
logsumexp, kept as the fallback). The op evaluates (x - mu)^2 prec directly, the more accurate
form, so the two agree to rounding (~1e-13 in log p), not bit for bit. The M-step is one
(C, N) @ (N, 2K + 1) matmul against [x, x^2, 1], formed once per fit (~25 ms).

Host synchronisation: one per EM iteration (the convergence test) and one per Lloyd iteration of
the k-means (its convergence test; two in the rare iteration that relocates an empty cluster);
nothing is copied to the host inside the loops.
"""
from __future__ import annotations

import dataclasses
import math
import warnings
from typing import List, Optional

import torch

from ..ops._ext import cuda_kernels_available, extension_available

KMEANS_INITS = ("torch", "sklearn")


@dataclasses.dataclass
class EMFit:
    """The winning restart: float64 tensors on the data's device, and scikit-learn's attributes."""
    weights: torch.Tensor       # (C,)       weights_
    means: torch.Tensor         # (C, K)     means_
    covariances: torch.Tensor   # (C, K)     covariances_ (reg_covar included)
    lower_bound: float          # lower_bound_: mean log p of the last E-step of the winning restart
    log_likelihood: float       # score(x): mean log p under the returned parameters
    n_iter: int                 # n_iter_
    converged: bool             # converged_
    lower_bounds: List[float]   # the final lower bound of every restart, in order


# -- the two steps ----------------------------------------------------------------------------------

def _fused_estep_available(x: torch.Tensor) -> bool:
    if not extension_available():
        return False
    return x.device.type == "cpu" or (x.device.type == "cuda" and cuda_kernels_available())


def e_step(x: torch.Tensor, weights: torch.Tensor, means: torch.Tensor, covariances: torch.Tensor,
           fused: Optional[bool] = None):
    """(log p(x_n) (N,), responsibilities (N, C)) under the mixture, all float64 on x's device.
    fused=None uses the fused op where available, False forces the matmul form."""
    if fused is None:
        fused = _fused_estep_available(x)
    if fused:
        # The raw op: functional.mixture_log_prob would add a validating host sync per call.
        return torch.ops.xvae_fast.mixture_log_prob(x, torch.log(weights), means,
                                                    torch.log(covariances), True)
    return _e_step_matmul(x, weights, means, covariances)


def _e_step_matmul(x, weights, means, covariances):
    """scikit-learn's `_estimate_log_gaussian_prob` for "diag" (the expanded quadratic form with
    precisions prec = (1 / sqrt(var))^2) and `_estimate_log_prob_resp`."""
    K = x.shape[1]
    prec_chol = 1.0 / torch.sqrt(covariances)
    prec = prec_chol * prec_chol
    log_det = torch.log(prec_chol).sum(1)
    quad = torch.addmm(torch.addmm((means * means * prec).sum(1), x, (means * prec).T, alpha=-2.0),
                       x * x, prec.T)
    joint = -0.5 * (K * math.log(2 * math.pi) + quad) + log_det + torch.log(weights)
    # logsumexp by hand: torch.logsumexp is ~4x slower here, and the exp serves the resp as well.
    mx = joint.amax(1, keepdim=True)
    mx = torch.where(torch.isfinite(mx), mx, torch.zeros_like(mx))
    e = torch.exp(joint - mx)
    s = e.sum(1, keepdim=True)
    return (mx + torch.log(s)).squeeze(1), e / s


def moments(x: torch.Tensor) -> torch.Tensor:
    """[x, x^2, 1] (N, 2K + 1): the M-step's sums r^T x, r^T x^2 and nk are one matmul against it."""
    return torch.cat([x, x * x, torch.ones_like(x[:, :1])], 1)


def _parameters(sums: torch.Tensor, reg_covar: float):
    """(nk, means, covariances) from the sums (C, 2K + 1) of r [x, x^2, 1]."""
    K = (sums.shape[1] - 1) // 2
    nk = sums[:, 2 * K] + 10 * torch.finfo(sums.dtype).eps
    stats = sums[:, :2 * K] / nk[:, None]
    means = stats[:, :K]
    covariances = (stats[:, K:] - means * means).clamp_min(0.0) + reg_covar
    return nk, means.contiguous(), covariances


def m_step(xm: torch.Tensor, resp: torch.Tensor, reg_covar: float):
    """scikit-learn's `_estimate_gaussian_parameters` for "diag", from xm = moments(x) and the
    responsibilities (N, C): (nk, means, covariances). The variances are clamped at 0 before
    reg_covar is added: they are >= 0 in exact arithmetic, and where rounding makes
    r^T x^2 / nk - means^2 negative (collapsed components of duplicate rows) scikit-learn raises."""
    return _parameters(resp.T @ xm, reg_covar)


def m_step_labels(xm: torch.Tensor, labels: torch.Tensor, n_components: int, reg_covar: float):
    """`m_step` for one-hot responsibilities (the k-means initialisation)."""
    return _parameters(_cluster_sums(labels, xm, n_components), reg_covar)


def _cluster_sums(labels: torch.Tensor, values: torch.Tensor, n_clusters: int) -> torch.Tensor:
    """(n_clusters, D) sums of the rows of values (N, D) per label, in a fixed order: index_add_ on
    the CPU (sequential); on other devices its atomics would add in a varying order, so there it is
    a one-hot matmul."""
    if values.device.type == "cpu":
        sums = torch.zeros(n_clusters, values.shape[1], dtype=values.dtype, device=values.device)
        return sums.index_add_(0, labels, values)
    return torch.nn.functional.one_hot(labels, n_clusters).to(values.dtype).T @ values


# -- one restart ------------------------------------------------------------------------------------

def run_em(x: torch.Tensor, n_components: int, init: torch.Tensor, reg_covar: float,
           max_iter: int = 100, tol: float = 1e-3, fused: Optional[bool] = None,
           xm: Optional[torch.Tensor] = None):
    """One restart of scikit-learn's EM from `init`: integer labels (N,) in [0, n_components) (as
    one-hot responsibilities) or responsibilities (N, n_components). x is float64 (N, K), xm its
    `moments` if already formed. Returns (weights, means, covariances, lower_bound, n_iter,
    converged)."""
    if xm is None:
        xm = moments(x)
    if init.dtype.is_floating_point:
        nk, means, covs = m_step(xm, init.to(device=x.device, dtype=x.dtype), reg_covar)
    else:
        nk, means, covs = m_step_labels(xm, init.to(device=x.device, dtype=torch.int64), n_components,
                                        reg_covar)
    weights = nk / x.shape[0]
    lower_bound = -math.inf
    n_iter, converged = 0, False
    for n_iter in range(1, max_iter + 1):
        prev = lower_bound
        log_prob, resp = e_step(x, weights, means, covs, fused)
        nk, means, covs = m_step(xm, resp, reg_covar)
        weights = nk / nk.sum()
        lower_bound = float(log_prob.mean())  # the one host sync of the iteration
        if abs(lower_bound - prev) < tol:
            converged = True
            break
    return weights, means, covs, lower_bound, n_iter, converged


# -- the k-means initialisation ---------------------------------------------------------------------

def kmeans_torch(x: torch.Tensor, n_clusters: int, generator: torch.Generator, max_iter: int = 300,
                 tol: float = 1e-4) -> torch.Tensor:
    """Labels (N,) of a k-means on x (N, K): scikit-learn's KMeans(n_init=1) procedure in torch, on
    x's device: the data centred, greedy k-means++ seeding (2 + log k candidates per centre, the one
    that lowers the potential most is kept), then Lloyd iterations until the total squared centre
    shift is <= tol * the mean coordinate variance (or max_iter), an empty cluster taking the point
    farthest from its centre, and the labels of the final centres. `generator` (a CPU generator)
    gives the seeding draws, so a seed gives the same draws on every device. Not scikit-learn's
    random stream: the clusterings differ from sklearn's KMeans for the same seed (over 30 seeds
    on a 2000 x 16, 16-cluster set, the inertias and the EM fits started from them were
    statistically the same as scikit-learn's). Distances in float32, centre sums in float64."""
    x64 = x.to(torch.float64)
    xc64 = x64 - x64.mean(0)
    tol_abs = tol * float(xc64.var(0, correction=0).mean()) if tol > 0 else 0.0
    xc = xc64.float()  # distances in float32: the argmin of a near tie does not matter here
    xn = (xc * xc).sum(1)
    centres = _kmeans_plusplus(xc, xn, n_clusters, generator)
    for _ in range(max_iter):
        labels = _assign(xc, centres)
        sums = _cluster_sums(labels, xc64, n_clusters)
        counts = torch.bincount(labels, minlength=n_clusters)
        new = (sums / counts.clamp_min(1)[:, None]).float()
        shift = ((new - centres) ** 2).sum()
        # The one host sync of the iteration: the convergence test and whether a cluster is empty.
        shift_v, n_empty = torch.stack([shift.double(), (counts == 0).sum().double()]).tolist()
        if n_empty:  # rare: a second sync for this iteration
            new = _relocate_empty(xc, xn, xc64, centres, labels, counts, new)
            shift_v = float(((new - centres) ** 2).sum())
        centres = new
        if shift_v <= tol_abs:
            break
    return _assign(xc, centres)


def _assign(xc, centres):
    """The nearest centre of each row (argmin of |c|^2 - 2 x.c)."""
    return torch.addmm((centres * centres).sum(1), xc, centres.T, alpha=-2.0).argmin(1)


def _relocate_empty(xc, xn, xc64, centres, labels, counts, new):
    """scikit-learn's relocation of empty clusters: the i-th empty cluster takes the i-th row
    farthest from its (old) centre (scikit-learn also takes that row out of its old cluster's
    mean; here it leaves at the next assignment)."""
    dist = (xn - 2.0 * (xc * centres.index_select(0, labels)).sum(1)
            + (centres * centres).sum(1).index_select(0, labels))
    empty = counts == 0
    far = torch.topk(dist, min(len(counts), dist.shape[0])).indices
    rank = (torch.cumsum(empty.long(), 0) - 1).clamp(0, far.shape[0] - 1)
    moved = xc64.index_select(0, far.index_select(0, rank)).to(new.dtype)
    return torch.where(empty[:, None], moved, new)


def _kmeans_plusplus(xc, xn, n_clusters, generator):
    """Greedy k-means++ (scikit-learn's `_kmeans_plusplus`), without host syncs."""
    N, K = xc.shape
    dev = xc.device
    trials = 2 + int(math.log(n_clusters))
    u = torch.rand(1 + (n_clusters - 1) * trials, generator=generator, dtype=torch.float64).to(dev)
    centres = torch.empty(n_clusters, K, dtype=xc.dtype, device=dev)
    first = (u[:1] * N).long().clamp_max(N - 1)
    centres[0] = xc.index_select(0, first)[0]
    closest = (xn - 2.0 * (xc @ centres[0]) + xn.index_select(0, first)).clamp_min(0.0).double()
    pot = closest.sum()
    for c in range(1, n_clusters):
        vals = u[1 + (c - 1) * trials: 1 + c * trials] * pot
        ids = torch.searchsorted(torch.cumsum(closest, 0), vals).clamp_max(N - 1)
        cand = xc.index_select(0, ids)
        d = torch.addmm(xn[:, None] + (cand * cand).sum(1), xc, cand.T, alpha=-2.0).clamp_min(0.0)
        d = torch.minimum(d.double(), closest[:, None])
        pots = d.sum(0)
        best = pots.argmin().view(1)
        pot = pots.index_select(0, best)[0]
        closest = d.index_select(1, best)[:, 0]
        centres[c] = cand.index_select(0, best)[0]
    return centres


def kmeans_sklearn(x_host, n_clusters: int, random_state) -> torch.Tensor:
    """Labels (N,) (a CPU tensor) of scikit-learn's KMeans(n_clusters, n_init=1, random_state) on
    x_host (a float64 numpy array): exactly GaussianMixture's initialisation when random_state is
    the RandomState it passes through."""
    from sklearn.cluster import KMeans
    from sklearn.exceptions import ConvergenceWarning
    with warnings.catch_warnings():  # duplicate rows: fewer distinct points than clusters
        warnings.simplefilter("ignore", ConvergenceWarning)
        labels = KMeans(n_clusters=n_clusters, n_init=1, random_state=random_state).fit(x_host).labels_
    return torch.as_tensor(labels, dtype=torch.int64)


# -- the fit ----------------------------------------------------------------------------------------

def fit_diag_gmm(x: torch.Tensor, n_components: int, reg_covar: float, n_init: int = 1,
                 max_iter: int = 100, tol: float = 1e-3, seed: int = 0, kmeans: str = "torch",
                 fused: Optional[bool] = None) -> EMFit:
    """scikit-learn's GaussianMixture(n_components, covariance_type="diag", reg_covar, n_init,
    max_iter, tol, init_params="kmeans", random_state=seed).fit(x) in torch, on x's device.

    kmeans="sklearn" initialises every restart with scikit-learn's KMeans drawing from one
    RandomState(seed), exactly as GaussianMixture does, so the fit is scikit-learn's to rounding
    (the data is copied to the host once). kmeans="torch" (the default) uses `kmeans_torch` with a
    CPU torch.Generator seeded with `seed`: the same procedure on the data's device, about as fast
    as scikit-learn's KMeans on the CPU, but other random draws, hence other (as good on average,
    not identical) restarts. fused: see `e_step`."""
    if kmeans not in KMEANS_INITS:
        raise ValueError(f"kmeans must be one of {KMEANS_INITS}, got {kmeans!r}")
    if n_init < 1:
        raise ValueError(f"n_init must be >= 1, got {n_init}")
    x = x.detach().to(torch.float64).contiguous()
    xm = moments(x)
    if kmeans == "sklearn":
        import numpy as np
        random_state = np.random.RandomState(seed)
        x_host = x.cpu().numpy()  # the one copy to the host
    else:
        generator = torch.Generator().manual_seed(seed)
    best = None
    max_lower_bound = -math.inf
    lower_bounds = []
    for _ in range(n_init):
        labels = (kmeans_sklearn(x_host, n_components, random_state) if kmeans == "sklearn"
                  else kmeans_torch(x, n_components, generator))
        run = run_em(x, n_components, labels, reg_covar, max_iter, tol, fused, xm)
        lower_bound = run[3]
        lower_bounds.append(lower_bound)
        if lower_bound > max_lower_bound or max_lower_bound == -math.inf:
            max_lower_bound = lower_bound
            best = run
    weights, means, covs, lower_bound, n_iter, converged = best
    log_prob, _ = e_step(x, weights, means, covs, fused)
    return EMFit(weights, means, covs, lower_bound, float(log_prob.mean()), n_iter, converged,
                 lower_bounds)
