"""Fitting the frozen X-VAE prior on the stage-1 autoencoder's latents.

- `fit_single`: the per-coordinate mean and standard deviation (the single-Gaussian X-VAE, Eq. 6).
- `fit_mixture`: a C = K component diagonal Gaussian mixture fitted by EM: scikit-learn's
  GaussianMixture algorithm, run in torch on the latents' device (`em.fit_diag_gmm`, the default
  backend) or by scikit-learn itself (backend="sklearn", the reference fitter): fixed seed, several
  k-means initialisations (the best lower bound wins), a variance floor, and mixture weights
  floored and renormalised so that no component has weight 0 (a zero weight would make log pi_p
  infinite in the mixture KL).
Both return a `PriorFit` with the frozen `MixturePrior` and a report (log-likelihood, iterations,
convergence) that the trainer logs and saves.
"""
from __future__ import annotations

import dataclasses
import warnings
from typing import Any, Dict

import numpy as np
import torch

from . import em
from ..errors import ConfigError, DataError
from ..ops.prior import MixturePrior

BACKENDS = ("torch", "sklearn")
# EM fits a C-component mixture on at least 2 rows per component (the trainer checks this before
# stage 1: models.xvae.check_training_rows)
MIN_ROWS_PER_COMPONENT = 2


@dataclasses.dataclass
class PriorFit:
    prior: MixturePrior
    report: Dict[str, Any]


_NOT_FINITE = "the stage-1 latents contain NaN or inf; the autoencoder diverged (try a lower --lr)"


def _as_numpy(latents) -> np.ndarray:
    if isinstance(latents, torch.Tensor):
        latents = latents.detach().cpu().double().numpy()
    x = np.asarray(latents, dtype=np.float64)
    if x.ndim != 2:
        raise DataError(f"latents must have shape (N, K), got {x.shape}")
    if not np.isfinite(x).all():
        raise DataError(_NOT_FINITE)
    return x


def _as_tensor(latents) -> torch.Tensor:
    """The latents as a float64 tensor on their own device (a tensor is not copied to the host)."""
    if isinstance(latents, torch.Tensor):
        x = latents.detach().to(torch.float64)
    else:
        x = torch.as_tensor(np.asarray(latents, dtype=np.float64))
    if x.dim() != 2:
        raise DataError(f"latents must have shape (N, K), got {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise DataError(_NOT_FINITE)
    return x


def floor_weights(weights: np.ndarray, floor: float) -> np.ndarray:
    """Weights raised to at least `floor` and renormalised (floor < 1/C), so none is 0."""
    w = np.asarray(weights, dtype=np.float64)
    if floor * len(w) >= 1:
        raise ConfigError(f"weight floor {floor} is too large for {len(w)} components")
    w = np.clip(np.where(np.isfinite(w), w, 0.0), 0.0, None)
    if w.sum() <= 0:
        w = np.ones_like(w)
    w = w / w.sum()
    # Raise the small ones to `floor` and scale the others down so the sum stays 1.
    low = w < floor
    if low.any():
        rest = w[~low].sum()
        w = np.where(low, floor, w * (1.0 - floor * low.sum()) / rest)
    return w / w.sum()


def fit_single(latents, var_floor: float = 1e-4) -> PriorFit:
    """N(mean, diag(std^2)) of the latents; variances floored at var_floor * mean variance."""
    x = _as_numpy(latents)
    if x.shape[0] < 2:
        raise DataError(f"need at least 2 latents to fit the prior, got {x.shape[0]}")
    mean = x.mean(0)
    var = x.var(0)
    floor = var_floor * max(var.mean(), 1e-12)
    std = np.sqrt(np.maximum(var, floor))
    prior = MixturePrior.single(torch.tensor(mean, dtype=torch.float32),
                                torch.tensor(std, dtype=torch.float32))
    x_t = torch.as_tensor(x)
    ll = torch.distributions.Normal(torch.as_tensor(mean), torch.as_tensor(std)).log_prob(x_t).sum(1)
    report = {"kind": "single", "components": 1, "latent": x.shape[1], "n": x.shape[0],
              "log_likelihood": float(ll.mean()), "converged": True, "n_iter": 0,
              "variance_floor": float(floor), "floored_coordinates": int((var < floor).sum())}
    return PriorFit(prior, report)


def fit_mixture(latents, n_components: int = None, seed: int = 42, n_init: int = 3,
                max_iter: int = 200, tol: float = 1e-3, var_floor: float = 1e-4,
                weight_floor: float = 1e-3, backend: str = "torch", kmeans: str = "torch") -> PriorFit:
    """A diagonal GMM with n_components (default K) fitted by EM: scikit-learn's GaussianMixture
    (k-means initialisation, `n_init` restarts, random_state=seed, max_iter, tol) run by
    `em.fit_diag_gmm` in torch on the latents' device (backend="torch") or by scikit-learn on the
    host (backend="sklearn", the reference). The variance floor is added to every variance
    (`reg_covar`) and is relative: var_floor * the latents' mean variance.

    kmeans (torch backend only): "torch" initialises with `em.kmeans_torch` (scikit-learn's k-means
    procedure in torch on the latents' device, with its own random draws: other restarts, as good
    on average); "sklearn" with scikit-learn's KMeans on the same random stream as GaussianMixture,
    which makes the fit scikit-learn's to rounding."""
    if backend not in BACKENDS:
        raise ConfigError(f"prior fit backend must be one of {BACKENDS}, got {backend!r}")
    if kmeans not in em.KMEANS_INITS:
        raise ConfigError(f"k-means initialisation must be one of {em.KMEANS_INITS}, got {kmeans!r}")
    x = _as_tensor(latents) if backend == "torch" else _as_numpy(latents)
    n, K = x.shape
    C = K if n_components is None else int(n_components)
    if n < MIN_ROWS_PER_COMPONENT * C:
        raise DataError(f"need at least {MIN_ROWS_PER_COMPONENT * C} stage-1 latents to fit a "
                        f"{C}-component mixture, got {n}; use more data or a smaller --latent")
    if backend == "torch":
        floor = float(var_floor * max(float(x.var(0, correction=0).mean()), 1e-12))
        fit = em.fit_diag_gmm(x, C, max(floor, 1e-12), n_init=n_init, max_iter=max_iter, tol=tol,
                              seed=seed, kmeans=kmeans)
        raw_w, means, covs = (t.cpu().numpy() for t in (fit.weights, fit.means, fit.covariances))
        log_likelihood, lower_bound = fit.log_likelihood, fit.lower_bound
        n_iter, converged = fit.n_iter, fit.converged
    else:
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.mixture import GaussianMixture
        floor = float(var_floor * max(x.var(0).mean(), 1e-12))
        gm = GaussianMixture(n_components=C, covariance_type="diag", reg_covar=max(floor, 1e-12),
                             n_init=n_init, max_iter=max_iter, tol=tol, random_state=seed,
                             init_params="kmeans")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            gm.fit(x)
        raw_w, means, covs = gm.weights_, gm.means_, gm.covariances_
        log_likelihood, lower_bound = float(gm.score(x)), float(gm.lower_bound_)
        n_iter, converged = int(gm.n_iter_), bool(gm.converged_)
        kmeans = "sklearn"
    w = floor_weights(raw_w, weight_floor)
    stds = np.sqrt(np.maximum(covs, floor))
    prior = MixturePrior(torch.tensor(w, dtype=torch.float32), torch.tensor(means, dtype=torch.float32),
                         torch.tensor(stds, dtype=torch.float32))
    report = {"kind": "mixture", "components": C, "latent": K, "n": n,
              "log_likelihood": log_likelihood, "lower_bound": lower_bound,
              "n_iter": n_iter, "converged": converged, "n_init": n_init,
              "max_iter": max_iter, "tol": tol, "seed": seed, "variance_floor": floor,
              "weight_floor": weight_floor, "min_weight_before_floor": float(raw_w.min()),
              "floored_weights": int((raw_w < weight_floor).sum()),
              "weights": [float(v) for v in w], "backend": backend, "kmeans": kmeans}
    return PriorFit(prior, report)


def describe_fit(report: Dict[str, Any]) -> str:
    if report["kind"] == "single":
        return (f"single Gaussian over K = {report['latent']} (mean log-likelihood "
                f"{report['log_likelihood']:.3f} per latent, {report['floored_coordinates']} "
                "coordinates at the variance floor)")
    return (f"{report['components']}-component diagonal GMM over K = {report['latent']} by EM "
            f"({report.get('backend', 'sklearn')}): mean "
            f"log-likelihood {report['log_likelihood']:.3f}, {report['n_iter']} iterations, "
            f"{'converged' if report['converged'] else 'NOT converged (raise --em-max-iter)'}, best of "
            f"{report['n_init']} inits; {report['floored_weights']} weights raised to the floor "
            f"{report['weight_floor']:g}")
