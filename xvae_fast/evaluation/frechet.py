"""The Fréchet distance between two Gaussians fitted to feature sets, and their statistics files.

`frechet_distance` computes what pytorch-fid's `calculate_frechet_distance` computes:

    d^2 = ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))

with the same numerical safeguards: when the matrix square root of S1 S2 is not finite, `eps` is
added to both diagonals and the root is taken again; a complex root is accepted only when the
imaginary parts of its diagonal are below 1e-3, and then its real part is used. Statistics are the
feature mean and the unbiased covariance (`np.cov(rowvar=False)`), in float64, as in pytorch-fid,
and are saved as `.npz` files holding `mu` and `sigma`, the format pytorch-fid reads and writes.
"""
from __future__ import annotations

import os
import warnings
import zipfile
from typing import Tuple

import numpy as np

from ..errors import DataError


def gaussian_stats(features) -> Tuple[np.ndarray, np.ndarray]:
    """(mu (D,), sigma (D, D)) of an (N, D) feature array: mean and unbiased covariance, float64."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2:
        raise ValueError(f"features must be a 2-D array (N, D), got shape {f.shape}")
    if f.shape[0] < 2:
        raise ValueError(f"a covariance needs at least 2 feature vectors, got {f.shape[0]}")
    return f.mean(axis=0), np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])


def _sqrtm(a: np.ndarray) -> np.ndarray:
    from scipy import linalg
    with warnings.catch_warnings():
        # scipy warns (or, in old versions, prints) when the product is (nearly) singular; the
        # non-finite check below handles that case as pytorch-fid does.
        warnings.simplefilter("ignore")
        out = linalg.sqrtm(a)
    return out[0] if isinstance(out, tuple) else out


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2) (pytorch-fid's formula and
    safeguards; see the module docstring)."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, dtype=np.float64)), np.atleast_1d(np.asarray(mu2, dtype=np.float64))
    sigma1 = np.atleast_2d(np.asarray(sigma1, dtype=np.float64))
    sigma2 = np.atleast_2d(np.asarray(sigma2, dtype=np.float64))
    if mu1.shape != mu2.shape:
        raise ValueError(f"the two mean vectors have different lengths: {mu1.shape} and {mu2.shape}")
    if sigma1.shape != sigma2.shape or sigma1.shape != (mu1.shape[0], mu1.shape[0]):
        raise ValueError(f"covariances of shapes {sigma1.shape} and {sigma2.shape} do not match the "
                         f"mean's length {mu1.shape[0]}")
    diff = mu1 - mu2
    covmean = _sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        warnings.warn(f"Fréchet distance: the product of the covariances is singular; adding {eps} "
                      "to their diagonals", RuntimeWarning, stacklevel=2)
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = _sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            m = np.max(np.abs(covmean.imag))
            raise ValueError(f"Fréchet distance: the matrix square root has an imaginary component "
                             f"{m} (the covariances are not valid)")
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


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
