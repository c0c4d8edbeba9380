"""The frozen prior every op uses: a diagonal Gaussian mixture with C components over K coordinates."""
from __future__ import annotations

from typing import Dict, Tuple

import torch
from torch import nn

from ._validation import check_finite, check_std_range


class MixturePrior(nn.Module):
    """Diagonal Gaussian mixture prior: weights (C,), means (C, K), stds (C, K), kept as buffers.

    Validated on construction: shapes agree, values are finite, the stds lie in the valid range of
    the prior's dtype (`STD_RANGE`: [1e-9, 1e9] for float32, [1e-75, 1e75] for float64; a float64
    prior used with float32 inputs is checked against the float32 range when first converted) and the
    weights are a probability vector (non-negative, summing to 1 within max(1e-5, C * eps) of the
    dtype the weights came in, so float16 thirds pass). A single Gaussian is the
    C = 1 case (`MixturePrior.single`). The routed ops pair component k with coordinate k and need
    C == K; the coordinate's own prior is (means[k, k], stds[k, k]).
    """

    def __init__(self, weights, means, stds):
        super().__init__()
        weights = torch.as_tensor(weights)
        means = torch.as_tensor(means)
        stds = torch.as_tensor(stds)
        for name, t in (("weights", weights), ("means", means), ("stds", stds)):
            if not t.is_floating_point():
                raise TypeError(f"MixturePrior: {name} must be a floating-point tensor, got {t.dtype}")
        if means.dim() != 2:
            raise ValueError(f"MixturePrior: means must have shape (C, K), got {tuple(means.shape)}")
        C, K = means.shape
        if C < 1 or K < 1:
            raise ValueError(f"MixturePrior: means must be non-empty, got shape {tuple(means.shape)}")
        if stds.shape != means.shape:
            raise ValueError(f"MixturePrior: stds must have the shape of means {tuple(means.shape)}, "
                             f"got {tuple(stds.shape)}")
        if weights.shape != (C,):
            raise ValueError(f"MixturePrior: weights must have shape ({C},), got {tuple(weights.shape)}")
        if not (weights.device == means.device == stds.device):
            raise ValueError("MixturePrior: weights, means and stds must be on one device, got "
                             f"{weights.device}, {means.device}, {stds.device}")
        weights_eps = torch.finfo(weights.dtype).eps
        dtype = torch.promote_types(torch.promote_types(weights.dtype, means.dtype), stds.dtype)
        if dtype not in (torch.float32, torch.float64):
            dtype = torch.float32
        weights, means, stds = (t.detach().to(dtype) for t in (weights, means, stds))
        for name, t in (("weights", weights), ("means", means), ("stds", stds)):
            check_finite(t, f"MixturePrior: {name}")
        if (stds <= 0).any():
            raise ValueError(f"MixturePrior: stds must be > 0, got min {stds.min().item():.3g}")
        check_std_range(stds, "MixturePrior: stds", dtype)
        if (weights < 0).any():
            raise ValueError(f"MixturePrior: weights must be non-negative, got min {weights.min().item():.3g}")
        total = weights.double().sum().item()
        tol = max(1e-5, C * weights_eps)
        if abs(total - 1.0) > tol:
            raise ValueError(f"MixturePrior: weights must sum to 1 (a probability vector) within {tol:.3g}, "
                             f"got {total:.6g}")
        self.register_buffer("weights", weights.clone())
        self.register_buffer("means", means.clone())
        self.register_buffer("stds", stds.clone())
        self._cache: Dict[Tuple, Tuple[torch.Tensor, ...]] = {}

    @classmethod
    def single(cls, mean, std) -> "MixturePrior":
        """The single-Gaussian prior N(mean, diag(std^2)) of the single X-VAE (C = 1)."""
        mean = torch.as_tensor(mean)
        std = torch.as_tensor(std)
        if mean.dim() != 1 or std.shape != mean.shape:
            raise ValueError(f"MixturePrior.single: mean and std must both be (K,), got "
                             f"{tuple(mean.shape)} and {tuple(std.shape)}")
        return cls(torch.ones(1, dtype=mean.dtype if mean.is_floating_point() else torch.float32,
                              device=mean.device), mean[None], std[None])

    @property
    def num_components(self) -> int:
        return self.means.shape[0]

    @property
    def latent_dim(self) -> int:
        return self.means.shape[1]

    @property
    def is_single(self) -> bool:
        return self.num_components == 1

    def diag(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """(m_k, s_k) = (means[k, k], stds[k, k]) for C == K; for a single Gaussian, its mean and std."""
        if self.is_single:
            return self.means[0], self.stds[0]
        self.require_paired("the coordinate-wise prior")
        return torch.diagonal(self.means), torch.diagonal(self.stds)

    def require_paired(self, what: str) -> None:
        C, K = self.means.shape
        if C != K:
            raise ValueError(f"{what} pairs component k with coordinate k and needs C == K, but the "
                             f"prior has C = {C} components over K = {K} coordinates")

    def _apply(self, fn, recurse=True):
        self._cache = {}
        return super()._apply(fn, recurse)

    def tensors_for(self, dtype: torch.dtype, device) -> Tuple[torch.Tensor, ...]:
        """(weights, log_weights, means, stds, m_diag, s_diag) in the accumulation dtype of `dtype`
        (float64 for float64 inputs, float32 otherwise) on `device`, cached."""
        acc = torch.float64 if dtype == torch.float64 else torch.float32
        device = torch.device(device)
        if torch.compiler.is_compiling():  # traced: the conversions become part of the graph
            return self._convert(acc, device)
        key = (acc, device, self.weights.data_ptr(), self.means.data_ptr(), self.stds.data_ptr(),
               self.weights._version, self.means._version, self.stds._version)
        hit = self._cache.get(key)
        if hit is None:
            hit = self._convert(acc, device)
            self._cache = {key: hit}
        return hit

    def _convert(self, acc, device):
        if acc != self.stds.dtype:   # a float64 prior used with float32 inputs: float32's range
            check_std_range(self.stds, "MixturePrior: stds", acc, " (this float64 prior is used with "
                            "lower-precision inputs here)")
        w, M, S = (t.to(device=device, dtype=acc).contiguous() for t in
                   (self.weights, self.means, self.stds))
        if self.is_single or M.shape[0] == M.shape[1]:
            m, s = (M[0], S[0]) if self.is_single else (torch.diagonal(M), torch.diagonal(S))
            m, s = m.contiguous(), s.contiguous()
        else:
            m = s = None
        return w, torch.log(w), M, S, m, s

    def extra_repr(self) -> str:
        return f"C={self.num_components}, K={self.latent_dim}, dtype={self.means.dtype}"
