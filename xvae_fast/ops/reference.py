"""Plain-PyTorch reference of every fused op (SPEC.md), used for parity and gradient checks.

Each function has the signature of its fused twin in `xvae_fast` and differentiates by ordinary
autograd. Computation runs in the accumulation dtype (float64 for float64 inputs, float32 otherwise)
and returns the input dtype, as the kernels do. The random ops accept `noise=(eta, u, u_row)` (the
normals, per-element uniforms and per-row uniforms) so they can replay the fused kernels' draws
exactly; `xvae_fast.ops.draw_noise(rng_state, ...)` regenerates those.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch

from ._validation import check_finite as check_finite_values
from ._validation import check_kde_args, check_reduction
from .plans import Plan, resolve_plan
from .prior import MixturePrior


def _acc(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _reduce(x: torch.Tensor, reduction: str) -> torch.Tensor:
    check_reduction(reduction)
    if reduction == "none":
        return x
    if x.numel() == 0:
        return x.sum()
    return x.mean() if reduction == "mean" else x.sum()


def responsibility_rows(logits: torch.Tensor) -> torch.Tensor:
    """r[i,k] = softplus(l[i,k]) / sum_j softplus(l[i,j]) (Eq. 10), stable for logits down to -100:
    each row is scaled by exp(-c), c = min(max_j l[i,j], 0), before normalising."""
    l = logits.to(_acc(logits.dtype))
    c = l.max(dim=1, keepdim=True).values.clamp(max=0.0).detach()
    neg = c < 0
    # The scaled branch only serves rows with a negative maximum; elsewhere it sees a harmless -1, so
    # exp(l) cannot overflow there and poison the gradient through torch.where (0 * inf = NaN).
    ln = torch.where(neg, l, torch.full_like(l, -1.0))
    u = torch.exp(ln)
    small = u < 1e-4
    u_big = torch.where(small, torch.ones_like(u), u)     # log1p(u) / u is 0/0 once u underflows
    ratio = torch.where(small, 1.0 - 0.5 * u, torch.log1p(u_big) / u_big)
    scaled = torch.where(neg, torch.exp(ln - c) * ratio, torch.nn.functional.softplus(l))
    return scaled / scaled.sum(dim=1, keepdim=True)


def responsibilities(logits: torch.Tensor) -> torch.Tensor:
    """pi_q[k] = mean_i r[i,k], (K,), differentiable, in the accumulation dtype."""
    if logits.shape[0] == 0:
        return torch.zeros(logits.shape[1], dtype=_acc(logits.dtype), device=logits.device)
    return responsibility_rows(logits).mean(dim=0)


def kln(mu: torch.Tensor, logvar: torch.Tensor, m: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """KL( N(mu, exp(logvar)) || N(m, s^2) ), elementwise. The variance ratio is one exponential,
    exp(logvar - 2 log s - log 2): exp(logvar) alone overflows float32 where the KL is still finite."""
    log_s = torch.log(s)
    return (log_s - 0.5 * logvar + torch.exp(logvar - 2 * log_s - math.log(2.0))
            + (mu - m) ** 2 / (2 * s * s) - 0.5)


def mixture_kl(logits, mu, logvar, prior: MixturePrior, reduction: str = "mean"):
    """(total, categorical, gaussian): KL(pi_q || pi_p) + sum_k pi_q[k] KLN[i,k] per row (Eq. 18)."""
    dtype = mu.dtype
    acc = _acc(dtype)
    B = mu.shape[0]
    w, logw, _, _, m, s = prior.tensors_for(dtype, mu.device)
    if B == 0:
        z = mu.new_zeros((0,) if reduction == "none" else ())
        return z, z.clone(), z.clone()
    pi_q = responsibilities(logits)
    safe = pi_q.clamp_min(torch.finfo(acc).tiny)
    cat = (pi_q * (torch.log(safe) - logw)).sum()
    gauss = (pi_q * kln(mu.to(acc), logvar.to(acc), m, s)).sum(dim=1)
    cat_rows = cat.expand(B)
    out = [_reduce(t, reduction) for t in (cat_rows + gauss, cat_rows, gauss)]
    return tuple(t.to(dtype) for t in out)


def gaussian_kl(mu, logvar, prior_mean, prior_std, reduction: str = "none"):
    """sum_k KLN(mu[i,k], sigma[i,k]; prior_mean[k], prior_std[k]) per row (Eq. 16)."""
    acc = _acc(mu.dtype)
    rows = kln(mu.to(acc), logvar.to(acc), prior_mean.to(acc), prior_std.to(acc)).sum(dim=1)
    return _reduce(rows, reduction).to(mu.dtype)


def sample_categorical(weights: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """The first c with cdf[c] > u * cdf[-1] (inverse CDF in float64), as the kernels draw it."""
    cdf = torch.cumsum(weights.to(torch.float64), 0)
    idx = torch.searchsorted(cdf, (u.to(torch.float64) * cdf[-1]).contiguous(), right=True)
    return idx.clamp(max=weights.numel() - 1)


def _default_noise(B, K, dtype, device, generator):
    # (generator= is passed only when given: torch.compile traces the default-generator form.)
    g = {} if generator is None else {"generator": generator}
    eta = torch.randn(B, K, dtype=_acc(dtype), device=device, **g)
    u = torch.rand(B, K, dtype=torch.float64, device=device, **g)
    u_row = torch.rand(B, dtype=torch.float64, device=device, **g)
    return eta, u, u_row


def routed_transport(mu, logvar, prior: MixturePrior, plan="full", pi_q=None, generator=None,
                     noise: Optional[Tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = None,
                     return_components: bool = False):
    """z (B, K) by per-coordinate routing and transport (Eqs. 11-13); see SPEC steps 1-4."""
    B, K = mu.shape
    plan = resolve_plan(plan, K)
    prior.require_paired("routed_transport")
    if plan.needs_pi_q and pi_q is None:
        raise ValueError(f"plan {plan.name!r} routes by pi_q, but pi_q was not given")
    dtype, acc = mu.dtype, _acc(mu.dtype)
    w, _, M, S, m, s = prior.tensors_for(dtype, mu.device)
    eta, u, u_row = noise if noise is not None else _default_noise(B, K, dtype, mu.device, generator)
    eta = eta.to(acc)
    mu_a, lv_a = mu.to(acc), logvar.to(acc)

    route = torch.tensor([("home", "prior", "posterior").index(c.route) for c in plan.coordinates],
                         device=mu.device)
    tie_row = torch.tensor([c.tie == "row" for c in plan.coordinates], device=mu.device)
    source = torch.tensor([("prior", "prior_home", "posterior").index(c.source)
                           for c in plan.coordinates], device=mu.device)
    direct = torch.tensor([c.mode == "direct" for c in plan.coordinates], device=mu.device)

    u_sel = torch.where(tie_row, u_row[:, None].expand(B, K), u)
    home = torch.arange(K, device=mu.device).expand(B, K)
    c = torch.where(route == 1, sample_categorical(w, u_sel), home)
    if plan.needs_pi_q:
        c = torch.where(route == 2, sample_categorical(pi_q.detach(), u_sel), c)

    eps_prior = M[c, home] + S[c, home] * eta
    eps_home = M[c, c] + S[c, c] * eta
    eps_post = mu_a.gather(1, c) + torch.exp(0.5 * lv_a.gather(1, c)) * eta
    eps = torch.where(source == 0, eps_prior, torch.where(source == 1, eps_home, eps_post))
    transported = mu_a + torch.exp(0.5 * lv_a) / s * (eps - m)
    z = torch.where(direct, eps, transported).to(dtype)
    return (z, c) if return_components else z


def sample_prior(prior: MixturePrior, n: int, alpha: float = 1.0, routing: str = "per-coordinate",
                 generator=None, noise=None):
    """n prior samples (Eqs. 20-21): per coordinate (or per row) c ~ Cat(pi_p),
    z = M[c,k] + alpha * S[c,k] * eta."""
    return sample_mixture(prior.weights, prior.means, prior.stds, n, alpha, routing, generator, noise)


def sample_mixture(weights, means, stds, n: int, alpha: float = 1.0,
                   routing: str = "per-coordinate", generator=None, noise=None):
    """`sample_prior` on raw tensors (differentiable in means and stds)."""
    C, K = means.shape
    if noise is None:
        noise = _default_noise(n, K, means.dtype, means.device, generator)
    eta, u, u_row = noise
    if routing == "per-row":
        c = sample_categorical(weights, u_row)[:, None].expand(n, K)
    else:
        c = sample_categorical(weights, u)
    cols = torch.arange(K, device=means.device).expand(n, K)
    return means[c, cols] + alpha * stds[c, cols] * eta.to(means.dtype)


def mixture_log_prob(z, log_weights, means, log_vars, return_responsibilities: bool = False):
    """log sum_c w_c N(z; means[c], diag(exp(log_vars[c]))) per row (N,), by materialising the
    (N, C, d) tensor; with return_responsibilities also r (N, C) = softmax_c of the joint terms."""
    acc = _acc(z.dtype)
    z_a, lw, m, lv = (t.to(acc) for t in (z, log_weights, means, log_vars))
    diff = z_a[:, None, :] - m[None]
    quad = (diff * diff * torch.exp(-lv)[None]).sum(-1)
    joint = lw[None] - 0.5 * (quad + lv.sum(-1)[None] + m.shape[1] * math.log(2 * math.pi))
    lp = torch.logsumexp(joint, dim=1)
    if not return_responsibilities:
        return lp.to(z.dtype)
    return lp.to(z.dtype), torch.exp(joint - lp[:, None]).to(z.dtype)


def kde_log_prob(z, centres, bandwidth, exclude_self: bool = False, check_finite: bool = False):
    """log q(z_i) (N,) of the isotropic Gaussian kernel density estimate on the centres (m, d) with
    bandwidth h: logsumexp_j(-||z_i - c_j||^2 / (2 h^2)) - log m - d log h - (d/2) log 2 pi, by
    materialising the (N, m, d) differences. exclude_self=True (N == m) leaves out j = i and divides
    by m - 1. Differentiable in z; the centres are treated as detached, and a bandwidth that
    requires grad is refused (as by the fused op)."""
    check_kde_args(z, centres, bandwidth, exclude_self)
    if check_finite:
        check_finite_values(z, "z")
    acc = _acc(z.dtype)
    z_a, c = z.to(acc), centres.detach().to(acc)
    h = torch.as_tensor(bandwidth, dtype=acc).detach().to(z.device) if isinstance(bandwidth, torch.Tensor) \
        else torch.tensor(float(bandwidth), dtype=acc, device=z.device)
    N, d = z.shape
    m = c.shape[0]
    scores = -((z_a[:, None, :] - c[None]) ** 2).sum(-1) / (2 * h * h)
    if exclude_self:
        scores = scores.masked_fill(torch.eye(N, dtype=torch.bool, device=z.device), -math.inf)
        m = m - 1
    lse = torch.logsumexp(scores, dim=1) if N else scores.sum(1)
    return (lse - math.log(m) - d * torch.log(h) - 0.5 * d * math.log(2 * math.pi)).to(z.dtype)


def component_kl(mu, logvar, prior: MixturePrior):
    """D[i, c] = KL(N(mu_i, diag exp(logvar_i)) || N(M[c], diag S[c]^2)) = sum_k KLN(mu[i,k],
    sigma[i,k]; M[c,k], S[c,k]), (B, C), by materialising the (B, C, K) tensor. Differentiable in mu
    and logvar; the prior is frozen."""
    acc = _acc(mu.dtype)
    _, _, M, S, _, _ = prior.tensors_for(mu.dtype, mu.device)
    return _component_kl_acc(mu.to(acc), logvar.to(acc), M, S).to(mu.dtype)


def _component_kl_acc(mu, logvar, M, S):
    d = mu[:, None, :] - M[None]
    inv2 = 0.5 / (S * S)
    return (torch.log(S)[None] - 0.5 * logvar[:, None, :] + (torch.exp(logvar)[:, None, :] + d * d)
            * inv2[None] - 0.5).sum(-1)


BOUND_KINDS = ("tight", "mixture")


def mixture_bound(mu, logvar, prior: MixturePrior, kind: str = "tight", logits=None,
                  reduction: str = "mean", return_weights: bool = False):
    """Upper bounds of KL(q_i || p) for a diagonal Gaussian posterior q_i and the diagonal mixture
    prior p = sum_c pi_c N(M[c], diag S[c]^2) (SPEC Revision 2), from D = component_kl:

    - kind "tight": -log sum_c pi_c exp(-D[i,c]), Lemma 1 at its optimal weights
      r*[i,c] = softmax_c(log pi_c - D[i,c]); categorical part KL(r*_i || pi), Gaussian part
      sum_c r*[i,c] D[i,c]. `logits` must be None.
    - kind "mixture": Lemma 1 with the encoder's weights r[i,c] = softplus(l[i,c]) / sum_j
      softplus(l[i,j]) from `logits` (B, C): KL(r_i || pi) + sum_c r[i,c] D[i,c].

    Returns (total, categorical, gaussian), each reduced by `reduction`; with return_weights also the
    per-row weights r (B, C) (r* or the encoder's), detached. Gradients flow to mu, logvar and logits,
    never to the prior."""
    if kind not in BOUND_KINDS:
        raise ValueError(f"kind must be one of {BOUND_KINDS}, got {kind!r}")
    dtype, acc = mu.dtype, _acc(mu.dtype)
    B = mu.shape[0]
    _, logw, M, S, _, _ = prior.tensors_for(dtype, mu.device)
    D = _component_kl_acc(mu.to(acc), logvar.to(acc), M, S)
    if kind == "tight":
        joint = logw[None] - D
        lse = torch.logsumexp(joint, dim=1) if B else joint.sum(1)
        log_r = joint - lse[:, None]
        r = torch.exp(log_r)
        total = -lse
        gauss = (r * D).sum(1)
        cat = (r * (log_r - logw[None])).sum(1)
    else:
        r = responsibility_rows(logits)
        safe = r.clamp_min(torch.finfo(acc).tiny)
        cat = (r * (torch.log(safe) - logw[None])).sum(1)
        gauss = (r * D).sum(1)
        total = cat + gauss
    out = tuple(_reduce(t, reduction).to(dtype) for t in (total, cat, gauss))
    if return_weights:
        return out + (r.detach().to(dtype),)
    return out
