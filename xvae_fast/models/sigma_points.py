"""Sigma points of a diagonal Gaussian (the unscented transform; Unscented Autoencoder, Janjos et al.
ICML 2023, Eqs. 5-7), in plain PyTorch and differentiable with respect to mu and logvar.

Conventions:
- The posterior is N(mu, diag(sigma^2)) with sigma = exp(logvar / 2); mu and logvar are (B, n).
- The 2n + 1 points are indexed 0..2n: chi_0 = mu, chi_i = mu + sqrt(n + kappa) sigma_i e_i and
  chi_{n+i} = mu - sqrt(n + kappa) sigma_i e_i for i = 1..n (axis i - 1 in 0-based coordinates).
- kappa > -n. The default 1e-3 is the authors' code value (`lmd`); it puts the points at about
  +-sqrt(n) sigma (+-8 sigma at n = 64).
- Weights (`ut_weights`): "standard" (W_0 = kappa / (n + kappa), W_i = 1 / (2 (n + kappa))) reproduces
  the mean and the covariance exactly for any kappa > -n; "uniform" (1 / (2n + 1), the paper's Eqs. 6-7)
  reproduces the mean, but the covariance only up to the factor 2 (n + kappa) / (2n + 1) (exact at
  kappa = 1/2).
- Heuristics (`select_sigma_indices`) choose K of the 2n + 1 indices per row: "random" (uniform, with
  replacement by default, the mean included), "random-pairs" (K/2 distinct random axes, both signs),
  "top-pairs" (the K/2 axes with the largest sigma, both signs). Pairs come interleaved:
  [i_1, n + i_1, i_2, n + i_2, ...].
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from ..shard import rand_rows, randint_rows

SIGMA_HEURISTICS = ("random", "random-pairs", "top-pairs")
UT_WEIGHTINGS = ("standard", "uniform")


def _check_kappa(kappa, n: int) -> float:
    if isinstance(kappa, bool) or not isinstance(kappa, (int, float)) or not math.isfinite(kappa):
        raise ValueError(f"kappa must be a finite number, got {kappa!r}")
    if kappa <= -n:
        raise ValueError(f"kappa must be > -n = {-n} (n = {n} latent coordinates), got {kappa}")
    return float(kappa)


def _check_int(value, name: str, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return value


def _check_moments(mu, logvar) -> None:
    for name, t in (("mu", mu), ("logvar", logvar)):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name} must be a tensor, got {type(t).__name__}")
        if t.dim() != 2 or t.shape[1] < 1:
            raise ValueError(f"{name} must have shape (B, n) with n >= 1, got {tuple(t.shape)}")
        if not t.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor, got {t.dtype}")
    if mu.shape != logvar.shape:
        raise ValueError(f"mu and logvar must have the same shape, got {tuple(mu.shape)} and "
                         f"{tuple(logvar.shape)}")


def _gather_points(mu: torch.Tensor, logvar: torch.Tensor, kappa: float,
                   index: torch.Tensor) -> torch.Tensor:
    """The points chi_index (B, K, n), unchecked: each is mu plus one signed step on one axis, so
    only the (B, K) steps are computed and scattered into copies of mu (never the 2n + 1 points)."""
    n = mu.shape[1]
    step = math.sqrt(n + kappa) * torch.exp(0.5 * logvar)                      # (B, n)
    axis = torch.where(index == 0, torch.zeros_like(index), (index - 1) % n)  # (B, K)
    sign = (index >= 1).to(mu.dtype) - 2 * (index > n).to(mu.dtype)         # 0, +1 or -1
    delta = step.gather(1, axis) * sign                                        # (B, K)
    base = mu.unsqueeze(1).expand(-1, index.shape[1], -1)
    return torch.scatter_add(base, 2, axis.unsqueeze(-1), delta.unsqueeze(-1))


def sigma_points(mu: torch.Tensor, logvar: torch.Tensor, kappa: float = 1e-3,
                 index: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The sigma points of N(mu, diag(exp(logvar))): all 2n + 1 as (B, 2n + 1, n) (index None), or
    the ones named by `index` (B, K) (long, values in [0, 2n]) as (B, K, n), gathered without
    building the full set. Differentiable with respect to mu and logvar."""
    _check_moments(mu, logvar)
    B, n = mu.shape
    kappa = _check_kappa(kappa, n)
    if index is None:
        offsets = torch.diag_embed(math.sqrt(n + kappa) * torch.exp(0.5 * logvar))  # (B, n, n)
        m = mu.unsqueeze(1)
        return torch.cat([m, m + offsets, m - offsets], 1)
    if not isinstance(index, torch.Tensor):
        raise ValueError(f"index must be a (B, K) long tensor, got {type(index).__name__}")
    if index.dtype != torch.long:
        raise ValueError(f"index must be a long (int64) tensor, got {index.dtype}")
    if index.dim() != 2 or index.shape[0] != B or index.shape[1] < 1:
        raise ValueError(f"index must have shape (B, K) = ({B}, K >= 1), got {tuple(index.shape)}")
    if index.device != mu.device:
        raise ValueError(f"index is on {index.device} but mu is on {mu.device}")
    lo, hi = int(index.min()), int(index.max())
    if lo < 0 or hi > 2 * n:
        raise ValueError(f"index values must lie in [0, 2n] = [0, {2 * n}], got [{lo}, {hi}]")
    return _gather_points(mu, logvar, kappa, index)


def ut_weights(n: int, kappa: float = 1e-3, kind: str = "standard", dtype: torch.dtype = torch.float64,
               device=None) -> torch.Tensor:
    """The (2n + 1,) weights of the points, in the order of `sigma_points`: "standard" (exact mean
    and covariance) or "uniform" 1 / (2n + 1) (the paper's Eqs. 6-7)."""
    n = _check_int(n, "n")
    kappa = _check_kappa(kappa, n)
    if kind not in UT_WEIGHTINGS:
        raise ValueError(f"kind must be one of {UT_WEIGHTINGS}, got {kind!r}")
    if kind == "uniform":
        return torch.full((2 * n + 1,), 1.0 / (2 * n + 1), dtype=dtype, device=device)
    w = torch.full((2 * n + 1,), 1.0 / (2 * (n + kappa)), dtype=dtype, device=device)
    w[0] = kappa / (n + kappa)
    return w


def _uniform(shape, generator, device) -> torch.Tensor:
    """U(0, 1) draws from `generator` (on its own device) or the global RNG, moved to `device`."""
    where = generator.device if generator is not None else device
    return rand_rows(shape, generator=generator, device=where).to(device)


def _pairs(axes: torch.Tensor, n: int) -> torch.Tensor:
    """0-based axes (B, P) -> interleaved point indices (B, 2P): [a + 1, a + 1 + n, ...]."""
    return torch.stack([axes + 1, axes + 1 + n], -1).flatten(1)


@torch.no_grad()
def select_sigma_indices(heuristic: str, K: int, sigma: torch.Tensor, generator=None,
                         replacement: bool = True) -> torch.Tensor:
    """K point indices per row (B, K) long, on sigma's device, for the posterior stds sigma (B, n).
    "random": uniform over all 2n + 1 (with replacement, or K distinct ones when replacement is
    False); "random-pairs" / "top-pairs": K/2 distinct axes (random / largest sigma), both signs.
    Draws use `generator` or else the global torch RNG; "top-pairs" draws nothing."""
    if heuristic not in SIGMA_HEURISTICS:
        raise ValueError(f"heuristic must be one of {SIGMA_HEURISTICS}, got {heuristic!r}")
    K = _check_int(K, "K")
    if not isinstance(sigma, torch.Tensor) or sigma.dim() != 2 or sigma.shape[1] < 1:
        shape = tuple(sigma.shape) if isinstance(sigma, torch.Tensor) else type(sigma).__name__
        raise ValueError(f"sigma must be a (B, n) tensor with n >= 1, got {shape}")
    B, n = sigma.shape
    dev = sigma.device
    if heuristic == "random":
        if replacement:
            where = generator.device if generator is not None else dev
            return randint_rows(2 * n + 1, (B, K), generator=generator, device=where).to(dev)
        if K > 2 * n + 1:
            raise ValueError(f"K larger than 2n+1 without replacement: K = {K}, 2n+1 = {2 * n + 1} "
                             f"(n = {n})")
        # the first K of a random permutation per row: K distinct indices
        return _uniform((B, 2 * n + 1), generator, dev).argsort(1)[:, :K]
    if K % 2:
        raise ValueError(f"K must be even for the {heuristic!r} heuristic (pairs of points), got K = {K}")
    if K // 2 > n:
        raise ValueError(f"K = {K} asks for K/2 = {K // 2} pairs but there are only n = {n} axes "
                         f"(the {heuristic!r} heuristic needs K/2 <= n)")
    if heuristic == "random-pairs":
        axes = _uniform((B, n), generator, dev).argsort(1)[:, :K // 2]
    else:
        axes = sigma.topk(K // 2, dim=1).indices
    return _pairs(axes, n)
