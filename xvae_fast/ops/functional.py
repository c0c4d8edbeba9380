"""The public fused ops. Each validates its arguments (errors name the argument), then dispatches to
the compiled kernel for the tensors' device. Plain-PyTorch twins live in xvae_fast.ops.reference."""
from __future__ import annotations

from typing import Optional, Tuple, Union

import torch

from . import reference
from ._ext import require_extension
from ._validation import (FLOATING, STD_RANGE, check_batch, check_inputs_finite, check_kde_args,
                          check_prior_device, check_reduction, check_std_range, check_tensor,
                          values_checkable, check_finite as require_finite)
from .plans import Plan, resolve_plan
from .prior import MixturePrior

ROUTINGS = ("per-row", "per-coordinate")  # generation routings (per-row: exact mixture sampling)


def _ops():
    require_extension()
    return torch.ops.xvae_fast


def _check_prior(prior) -> MixturePrior:
    if not isinstance(prior, MixturePrior):
        raise TypeError(f"prior must be an xvae_fast.MixturePrior, got {type(prior).__name__}")
    return prior


def responsibilities(logits: torch.Tensor, check_finite: bool = False) -> torch.Tensor:
    """Batch-aggregated responsibilities pi_q (K,) of Eq. 10: mean over rows of
    softplus(l) / sum softplus(l). Differentiable; float64 for float64 logits, float32 otherwise."""
    check_batch("logits", logits)
    check_inputs_finite(check_finite, {"logits": logits})
    return reference.responsibilities(logits)


def mixture_kl(logits: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, prior: MixturePrior,
               reduction: str = "mean", check_finite: bool = False
               ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two-part mixture KL (Eq. 18): returns (total, categorical, gaussian), each reduced by
    `reduction` ("none" gives (B,), "mean"/"sum" scalars). Gradients flow to logits, mu, logvar."""
    _check_prior(prior)
    check_batch("logits", logits, K=prior.latent_dim)
    check_batch("mu", mu, "logits", logits)
    check_batch("logvar", logvar, "logits", logits)
    red = check_reduction(reduction)
    prior.require_paired("mixture_kl")
    check_prior_device(prior, mu, "mu")
    check_inputs_finite(check_finite, {"logits": logits, "mu": mu, "logvar": logvar})
    _, log_w, _, _, m, s = prior.tensors_for(mu.dtype, mu.device)
    total, cat, gauss, _, _ = _ops().mixture_kl_forward(logits, mu, logvar, log_w, m, s, red)
    return total, cat, gauss


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor, prior_mean: torch.Tensor,
                prior_std: torch.Tensor, reduction: str = "none", check_finite: bool = False) -> torch.Tensor:
    """Single-Gaussian X-VAE KL (Eq. 16): sum_k KL(N(mu, e^logvar) || N(prior_mean, prior_std^2)).
    The prior is frozen: no gradient flows to prior_mean or prior_std."""
    check_batch("mu", mu)
    check_batch("logvar", logvar, "mu", mu)
    red = check_reduction(reduction)
    K = mu.shape[1]
    acc = torch.float64 if mu.dtype == torch.float64 else torch.float32
    params = []
    for name, t in (("prior_mean", prior_mean), ("prior_std", prior_std)):
        check_tensor(t, name)
        if t.shape != (K,):
            raise ValueError(f"{name} must have shape ({K},) to match mu, got {tuple(t.shape)}")
        if t.device != mu.device:
            raise ValueError(f"{name} is on {t.device} but mu is on {mu.device}")
        if not t.is_floating_point():
            raise TypeError(f"{name} must be floating point, got {t.dtype}")
        if t.requires_grad and torch.is_grad_enabled():
            raise ValueError(f"{name} requires grad, but the X-VAE prior is frozen and gaussian_kl "
                             f"does not differentiate it; pass {name}.detach()")
        params.append(t.detach().to(acc).contiguous())
    # One host sync for the value checks; the detailed message is worked out only on failure.
    std = params[1]
    lo, hi = STD_RANGE[acc]
    if values_checkable() and not bool(((std >= lo) & (std <= hi)).all()):
        require_finite(std, "prior_std")
        if bool((std <= 0).any()):
            raise ValueError("prior_std must be > 0")
        check_std_range(std, "prior_std", acc)
    check_inputs_finite(check_finite, {"mu": mu, "logvar": logvar, "prior_mean": params[0]})
    return _ops().gaussian_kl_forward(mu, logvar, params[0], params[1], red)


def _check_pi_q(pi_q, K, ref):
    check_tensor(pi_q, "pi_q")
    if pi_q.shape != (K,):
        raise ValueError(f"pi_q must have shape ({K},), got {tuple(pi_q.shape)}")
    if pi_q.device != ref.device:
        raise ValueError(f"pi_q is on {pi_q.device} but mu is on {ref.device}")
    acc = torch.float64 if ref.dtype == torch.float64 else torch.float32
    # pi_q is a routing distribution (detached, SPEC step 1); it must be on the simplex.
    p = pi_q.detach().to(acc).contiguous()
    if not values_checkable():
        return p
    # One host sync per call on the training path; the detailed message only on failure.
    tol = 1e-3 * max(1, K) ** 0.5
    total = p.double().sum()
    if bool(torch.isfinite(p).all() & (p >= 0).all() & ((total - 1).abs() <= tol)):
        return p
    require_finite(p, "pi_q")
    if (p < 0).any():
        raise ValueError("pi_q must be non-negative (a probability vector)")
    raise ValueError(f"pi_q must sum to 1 (a probability vector), got {total.item():.6g}")


def routed_transport_with_state(mu, logvar, prior, plan="full", pi_q=None, generator=None,
                                check_finite: bool = False):
    """routed_transport returning (z, comp, rng_state): comp holds the component index of each
    posterior-source coordinate (B, P), rng_state the (seed, offset) its draws used, which
    `draw_noise` and the reference can replay."""
    _check_prior(prior)
    check_batch("mu", mu, K=prior.latent_dim)
    check_batch("logvar", logvar, "mu", mu)
    K = mu.shape[1]
    plan = resolve_plan(plan, K)
    prior.require_paired(f"routed_transport (plan {plan.name!r})")
    check_prior_device(prior, mu, "mu")
    if plan.needs_pi_q and pi_q is None:
        raise ValueError(f"plan {plan.name!r} routes by the posterior's pi_q, but pi_q was not "
                         "given; pass pi_q=xvae_fast.responsibilities(logits)")
    pq = _check_pi_q(pi_q, K, mu) if pi_q is not None else None
    check_inputs_finite(check_finite, {"mu": mu, "logvar": logvar})
    w, _, M, S, _, _ = prior.tensors_for(mu.dtype, mu.device)
    return _ops().routed_transport(mu, logvar, M, S, w, pq, plan.codes_tensor(mu.device),
                                   plan.num_posterior, generator)


def routed_transport(mu: torch.Tensor, logvar: torch.Tensor, prior: MixturePrior,
                     plan: Union[str, Plan] = "full", pi_q: Optional[torch.Tensor] = None,
                     generator: Optional[torch.Generator] = None, check_finite: bool = False) -> torch.Tensor:
    """The X-VAE latent code z (B, K): per-coordinate categorical routing and transport
    (Eqs. 11-13) under `plan` (a preset name or a Plan). Differentiable in mu and logvar."""
    return routed_transport_with_state(mu, logvar, prior, plan, pi_q, generator, check_finite)[0]


def _check_sample_args(n, alpha, routing):
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    if not isinstance(alpha, (int, float)) or not alpha > 0 or alpha != alpha or alpha == float("inf"):
        raise ValueError(f"alpha must be a positive finite number, got {alpha!r}")
    if routing not in ROUTINGS:
        raise ValueError(f"routing must be one of {ROUTINGS}, got {routing!r}")


def sample_mixture_with_state(weights, means, stds, n, alpha=1.0, routing="per-coordinate",
                              generator=None):
    """sample_prior on raw (C,), (C, K), (C, K) tensors, returning (z, rng_state); differentiable
    in means and stds."""
    _check_sample_args(n, alpha, routing)
    return _ops().sample_prior(means, stds, weights, n, float(alpha), routing == "per-row",
                               generator)


def sample_prior(prior: MixturePrior, n: int, alpha: float = 1.0, routing: str = "per-coordinate",
                 generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """n latent samples from the prior (Eqs. 20-21): per coordinate c_k ~ Cat(pi_p) and
    z_k ~ N(M[c_k,k], (alpha S[c_k,k])^2), or one c per row with routing="per-row". alpha < 1 favours
    fidelity, alpha > 1 diversity."""
    _check_prior(prior)
    return sample_mixture_with_state(prior.weights, prior.means, prior.stds, n, alpha, routing,
                                     generator)[0]


def draw_noise(rng_state: torch.Tensor, rows: int, cols: int, dtype: torch.dtype = torch.float32):
    """The draws (eta, u, u_row) the kernels make from rng_state for a rows x cols op: normals in
    float64 if dtype is float64 else float32, per-element and per-row uniforms in float64."""
    return _ops().draw_noise(rng_state, rows, cols, dtype == torch.float64)


def _check_mixture_params(z, log_weights, means, log_vars):
    check_tensor(z, "z")
    if z.dtype not in FLOATING:
        raise TypeError(f"z must be float32, float64, float16 or bfloat16, got {z.dtype}")
    if z.dim() != 2:
        raise ValueError(f"z must have shape (N, d), got {tuple(z.shape)}")
    d = z.shape[1]
    check_tensor(log_weights, "log_weights")
    if log_weights.dim() != 1 or log_weights.shape[0] < 1:
        raise ValueError(f"log_weights must have shape (C,) with C >= 1, got {tuple(log_weights.shape)}")
    C = log_weights.shape[0]
    for name, t in (("means", means), ("log_vars", log_vars)):
        check_tensor(t, name)
        if t.shape != (C, d):
            raise ValueError(f"{name} must have shape (C, d) = ({C}, {d}) to match log_weights and z, "
                             f"got {tuple(t.shape)}")
    for name, t in (("log_weights", log_weights), ("means", means), ("log_vars", log_vars)):
        if t.dtype != z.dtype:
            raise TypeError(f"{name} has dtype {t.dtype} but z has {z.dtype}; pass {name}.to(z.dtype)")
        if t.device != z.device:
            raise ValueError(f"{name} is on {t.device} but z is on {z.device}")
    if not values_checkable():
        return
    # One host sync: finite parameters and weights on the simplex (logsumexp(log_weights) = 0).
    lse = torch.logsumexp(log_weights.detach().double(), 0)
    # Loose enough for rounding of log_softmax over many components (and gradcheck's nudges).
    tol = 1e-5 if z.dtype == torch.float64 else (1e-3 if z.dtype == torch.float32 else 2e-2)
    ok = (~torch.isnan(log_weights.detach()).any() & torch.isfinite(means.detach()).all()
          & torch.isfinite(log_vars.detach()).all() & (lse.abs() <= tol))
    if bool(ok):
        return
    if torch.isnan(log_weights).any():
        raise ValueError("log_weights contains NaN")
    require_finite(means.detach(), "means")
    require_finite(log_vars.detach(), "log_vars")
    raise ValueError(f"log_weights must be log-probabilities (weights on the simplex, logsumexp = 0), "
                     f"got logsumexp {lse.item():.6g}; pass torch.log_softmax(logits, 0)")


def mixture_log_prob(z: torch.Tensor, log_weights: torch.Tensor, means: torch.Tensor,
                     log_vars: torch.Tensor, return_responsibilities: bool = False,
                     check_finite: bool = False):
    """log p(z) (N,) under the diagonal Gaussian mixture sum_c w_c N(means[c], diag(exp(log_vars[c]))),
    computed without materialising the (N, C, d) tensor. `log_weights` (C,) are log-probabilities.
    With return_responsibilities=True also returns r (N, C), the posterior over components.
    Differentiable in z, log_weights, means and log_vars (and through r)."""
    _check_mixture_params(z, log_weights, means, log_vars)
    check_inputs_finite(check_finite, {"z": z})
    lp, resp = _ops().mixture_log_prob(z, log_weights, means, log_vars, return_responsibilities)
    return (lp, resp) if return_responsibilities else lp


def kde_log_prob(z: torch.Tensor, centres: torch.Tensor, bandwidth: Union[float, torch.Tensor],
                 exclude_self: bool = False, check_finite: bool = False) -> torch.Tensor:
    """log q(z_i) (N,) under the isotropic Gaussian kernel density estimate on `centres` (m, d) with
    bandwidth h (AVAE's aggregate posterior):
        log q(z_i) = logsumexp_j(-||z_i - c_j||^2 / (2 h^2)) - log m - d log h - (d/2) log 2 pi.
    `bandwidth` is a positive number or a 0-dim tensor. exclude_self=True (z and centres with the
    same rows, N == m >= 2) leaves out exactly the j = i term and divides by m - 1 (leave-one-out).
    Differentiable in z only: the centres are always treated as detached (the KDE is a fixed
    target, as in the paper), and a bandwidth that requires grad is refused rather than silently
    given no gradient. The fused kernel forms the scores as a matrix product against the centres
    shifted by a central point (the mean of up to 1024 of them), with an online logsumexp (nothing
    of size N x m); rows where that expanded square would lose float precision (points far off
    the shift relative to h) are computed in the direct (z - c)^2 form instead."""
    check_kde_args(z, centres, bandwidth, exclude_self)
    check_inputs_finite(check_finite, {"z": z})
    # (a fill on z's device, not a host-to-device copy: no sync on a GPU)
    h = bandwidth.detach() if isinstance(bandwidth, torch.Tensor) else \
        torch.full((), float(bandwidth), dtype=torch.float64, device=z.device)
    lp, _, _ = _ops().kde_log_prob(z, centres.detach(), h, exclude_self)
    return lp


BOUND_KINDS = reference.BOUND_KINDS


def _check_posterior(mu, logvar, prior):
    _check_prior(prior)
    check_batch("mu", mu, K=prior.latent_dim)
    check_batch("logvar", logvar, "mu", mu)
    check_prior_device(prior, mu, "mu")


def component_kl(mu: torch.Tensor, logvar: torch.Tensor, prior: MixturePrior,
                 check_finite: bool = False) -> torch.Tensor:
    """D (B, C): D[i, c] = KL(N(mu_i, diag exp(logvar_i)) || N(means[c], diag stds[c]^2)), the KL of
    each row's diagonal Gaussian posterior to every component of the prior. Differentiable in mu and
    logvar; never in the prior."""
    _check_posterior(mu, logvar, prior)
    check_inputs_finite(check_finite, {"mu": mu, "logvar": logvar})
    _, _, M, S, _, _ = prior.tensors_for(mu.dtype, mu.device)
    return _ops().component_kl(mu, logvar, M, S)


def mixture_bound(mu: torch.Tensor, logvar: torch.Tensor, prior: MixturePrior, kind: str = "tight",
                  logits: Optional[torch.Tensor] = None, reduction: str = "mean",
                  return_weights: bool = False, check_finite: bool = False):
    """An upper bound of KL(q_i || p) for the diagonal Gaussian posterior q_i = N(mu_i, diag
    exp(logvar_i)) and the mixture prior (SPEC Revision 2), built on D = component_kl:
    kind "tight" is -log sum_c pi_c exp(-D[i,c]) (Lemma 1 at its optimal weights r*, no logits);
    kind "mixture" is KL(r_i || pi) + sum_c r[i,c] D[i,c] with the encoder's weights
    r = softplus(logits) / sum softplus(logits), logits (B, C). Returns (total, categorical,
    gaussian) reduced by `reduction`; with return_weights=True also the per-row weights r (B, C)
    (detached), e.g. for routing by pi_q = r.mean(0)."""
    _check_posterior(mu, logvar, prior)
    if kind not in BOUND_KINDS:
        raise ValueError(f"kind must be one of {BOUND_KINDS}, got {kind!r}")
    red = check_reduction(reduction)
    if kind == "mixture":
        if logits is None:
            raise ValueError("kind 'mixture' weights the components by the encoder's own per-row "
                             "weights: pass logits (B, C)")
        check_batch("logits", logits)
        if logits.shape != (mu.shape[0], prior.num_components):
            raise ValueError(f"logits must have shape (B, C) = ({mu.shape[0]}, {prior.num_components}), "
                             f"got {tuple(logits.shape)}")
        if logits.dtype != mu.dtype:
            raise TypeError(f"logits has dtype {logits.dtype} but mu has {mu.dtype}")
        if logits.device != mu.device:
            raise ValueError(f"logits is on {logits.device} but mu is on {mu.device}")
    elif logits is not None:
        raise ValueError("kind 'tight' uses the optimal weights r* = softmax(log pi - D) and takes no "
                         "logits; pass logits=None (or kind='mixture')")
    check_inputs_finite(check_finite, {"mu": mu, "logvar": logvar, "logits": logits})
    _, log_w, M, S, _, _ = prior.tensors_for(mu.dtype, mu.device)
    total, cat, gauss, weights, _ = _ops().mixture_bound(mu, logvar, log_w, M, S, logits, kind, red,
                                                         return_weights)
    return (total, cat, gauss, weights) if return_weights else (total, cat, gauss)
