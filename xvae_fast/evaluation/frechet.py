"""The Fréchet distance between two Gaussians fitted to feature sets, and their statistics files.

`frechet_distance` computes pytorch-fid's `calculate_frechet_distance`,

    d^2 = ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)),

but takes the trace term through the eigenvalues of the symmetric product S1^(1/2) S2 S1^(1/2)
(the same eigenvalues as S1 S2; scipy.linalg.eigh) rather than through scipy's `sqrtm` of S1 S2:
singular or rank-deficient covariances (fewer feature vectors than dimensions, a collapsed model)
then need no diagonal offset and give no complex roots or LinAlgError, and well-conditioned ones
agree with the `sqrtm` result to rounding (tested). Inputs that are not covariances (not symmetric
positive semi-definite, or not finite) are an error, not a number. Statistics are the feature mean and
the unbiased covariance (`np.cov(rowvar=False)`), in float64, as in pytorch-fid, and are saved as
`.npz` files holding `mu` and `sigma`, the format pytorch-fid reads and writes.
"""
from __future__ import annotations

import os
import zipfile
from typing import Tuple

import numpy as np

from ..errors import DataError

# eigenvalues below -PSD_TOL * the largest are a matrix that is not a covariance; the ones above are
# rounding (np.cov's are ~1e-16 relative) and are taken as 0
PSD_TOL = 1e-6


def gaussian_stats(features) -> Tuple[np.ndarray, np.ndarray]:
    """(mu (D,), sigma (D, D)) of an (N, D) feature array: mean and unbiased covariance, float64."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2:
        raise ValueError(f"features must be a 2-D array (N, D), got shape {f.shape}")
    if f.shape[0] < 2:
        raise ValueError(f"a covariance needs at least 2 feature vectors, got {f.shape[0]}")
    return f.mean(axis=0), np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])


def _check_psd(w: np.ndarray, scale: float, what: str) -> None:
    """`w`: the ascending eigenvalues of a symmetric matrix (divided by `scale`) that must be a
    covariance."""
    if w[0] < -PSD_TOL * max(abs(w[-1]), abs(w[0])):
        raise DataError(f"Fréchet distance: {what} is not a covariance (it has an eigenvalue of "
                        f"{w[0] * scale:.3g}; a covariance has none below 0)")


def _drop_rounding(w: np.ndarray) -> np.ndarray:
    """Eigenvalues at rounding level (below D * eps * the largest, numpy's matrix_rank tolerance) set
    to 0: the square root would turn their ~1e-16 into ~1e-8 each, an error that grows with the rank
    deficiency of the covariances."""
    tol = w.shape[0] * np.finfo(np.float64).eps * max(abs(w[-1]), abs(w[0]))
    return np.where(w > tol, w, 0.0)


def _check_covariance(sigma: np.ndarray, what: str) -> np.ndarray:
    """`sigma` made exactly symmetric, after checking that it is finite and symmetric."""
    if not np.isfinite(sigma).all():
        raise DataError(f"the Fréchet distance is not defined: {what} contains NaN or inf (e.g. "
                        "features too large for float64, from degenerate samples)")
    if np.abs(sigma - sigma.T).max() > PSD_TOL * np.abs(sigma).max():
        raise DataError(f"Fréchet distance: {what} is not a covariance (it is not symmetric)")
    return (sigma + sigma.T) / 2


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2) (pytorch-fid's formula through the
    eigenvalues of the symmetric product; see the module docstring). `eps` is pytorch-fid's diagonal
    offset for singular products, kept in the signature: the eigenvalue route needs none."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, dtype=np.float64)), np.atleast_1d(np.asarray(mu2, dtype=np.float64))
    sigma1 = np.atleast_2d(np.asarray(sigma1, dtype=np.float64))
    sigma2 = np.atleast_2d(np.asarray(sigma2, dtype=np.float64))
    if mu1.shape != mu2.shape:
        raise ValueError(f"the two mean vectors have different lengths: {mu1.shape} and {mu2.shape}")
    if sigma1.shape != sigma2.shape or sigma1.shape != (mu1.shape[0], mu1.shape[0]):
        raise ValueError(f"covariances of shapes {sigma1.shape} and {sigma2.shape} do not match the "
                         f"mean's length {mu1.shape[0]}")
    for i, mu in ((1, mu1), (2, mu2)):
        if not np.isfinite(mu).all():
            raise DataError(f"the Fréchet distance is not defined: mean {i} contains NaN or inf (e.g. "
                            "features too large for float64, from degenerate samples)")
    sigma1 = _check_covariance(sigma1, "covariance 1")
    sigma2 = _check_covariance(sigma2, "covariance 2")
    # one common scale keeps S1^(1/2) S2 S1^(1/2) in range for covariances near float64's limits;
    # the trace term scales with it
    from scipy import linalg
    scale = max(np.abs(sigma1).max(), np.abs(sigma2).max(), np.finfo(np.float64).tiny)
    s1, s2 = sigma1 / scale, sigma2 / scale
    w1, v1 = linalg.eigh(s1)
    _check_psd(w1, scale, "covariance 1")
    _check_psd(linalg.eigvalsh(s2), scale, "covariance 2")
    r1 = (v1 * np.sqrt(_drop_rounding(w1))) @ v1.T      # S1^(1/2), symmetric
    product = r1 @ s2 @ r1
    # Tr (S1 S2)^(1/2): the roots of the product's eigenvalues
    tr_covmean = scale * float(np.sqrt(_drop_rounding(linalg.eigvalsh((product + product.T) / 2))).sum())
    diff = mu1 - mu2
    with np.errstate(over="ignore"):
        d = float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_covmean)
    if not np.isfinite(d):
        raise DataError("the Fréchet distance is not defined: it exceeds float64's range (e.g. "
                        "features near float64's limit, from degenerate samples)")
    return d


def frechet_distance_from_features(a, b, eps: float = 1e-6) -> float:
    """Fréchet distance between the Gaussians fitted to two (N, D) feature arrays."""
    return frechet_distance(*gaussian_stats(a), *gaussian_stats(b), eps=eps)


def save_stats(path: str, mu, sigma) -> None:
    """Write `mu` and `sigma` to a compressed .npz file (pytorch-fid's --save-stats format)."""
    if not str(path).endswith(".npz"):
        raise DataError(f"statistics files end in .npz, got {path!r}")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise DataError(f"cannot write statistics {path!r}: folder {folder!r} does not exist")
    np.savez_compressed(path, mu=np.asarray(mu, dtype=np.float64), sigma=np.asarray(sigma, dtype=np.float64))


def load_stats(path: str, dims: int = None) -> Tuple[np.ndarray, np.ndarray]:
    """(mu, sigma) from a .npz statistics file (ours or pytorch-fid's); `dims` checks their size."""
    if not os.path.isfile(path):
        raise DataError(f"statistics file {path!r} does not exist")
    try:
        with np.load(path, allow_pickle=False) as f:
            keys = list(f.keys())
            if "mu" not in keys or "sigma" not in keys:
                raise DataError(f"statistics file {path!r} must hold arrays 'mu' and 'sigma', it "
                                f"holds {keys}")
            mu, sigma = f["mu"][:], f["sigma"][:]
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"could not read statistics file {path!r}: {exc}") from exc
    mu, sigma = np.atleast_1d(mu).astype(np.float64), np.atleast_2d(sigma).astype(np.float64)
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise DataError(f"statistics file {path!r}: mu {mu.shape} and sigma {sigma.shape} do not fit "
                        "(mu must be (D,) and sigma (D, D))")
    if dims is not None and mu.shape[0] != dims:
        raise DataError(f"statistics file {path!r} holds {mu.shape[0]}-d statistics, but these "
                        f"features are {dims}-d")
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise DataError(f"statistics file {path!r} contains NaN or inf")
    return mu, sigma
