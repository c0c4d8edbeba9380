"""Fake (meta) kernels and autograd formulas of the torch.ops.xvae_fast ops, so they work under
torch.compile and in training. Backward passes call the fused backward ops."""
from __future__ import annotations

import torch

ops = torch.ops.xvae_fast


def _acc(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


def _comp_dtype(K):
    return torch.int16 if K <= 32767 else torch.int32


# ---- fake kernels ---------------------------------------------------------------------------------
@torch.library.register_fake("xvae_fast::mixture_kl_forward")
def _(logits, mu, logvar, log_pi_p, prior_mean, prior_std, reduction):
    B, K = logits.shape
    shape = (B,) if reduction == 0 else ()
    out = [logits.new_empty(shape) for _ in range(3)]
    stats = [logits.new_empty((K,), dtype=_acc(logits.dtype)) for _ in range(2)]
    return (*out, *stats)


@torch.library.register_fake("xvae_fast::mixture_kl_backward")
def _(g_total, g_cat, g_gauss, logits, mu, logvar, log_pi_p, prior_mean, prior_std, pi_q,
      kln_colsum, reduction):
    return torch.empty_like(logits), torch.empty_like(mu), torch.empty_like(logvar)


@torch.library.register_fake("xvae_fast::gaussian_kl_forward")
def _(mu, logvar, prior_mean, prior_std, reduction):
    return mu.new_empty((mu.shape[0],) if reduction == 0 else ())


@torch.library.register_fake("xvae_fast::gaussian_kl_backward")
def _(grad, mu, logvar, prior_mean, prior_std, reduction):
    return torch.empty_like(mu), torch.empty_like(logvar)


@torch.library.register_fake("xvae_fast::routed_transport")
def _(mu, logvar, means, stds, pi_p, pi_q, plan, num_posterior, generator=None):
    B, K = mu.shape
    return (torch.empty_like(mu), mu.new_empty((B, num_posterior), dtype=_comp_dtype(K)),
            mu.new_empty((2,), dtype=torch.int64))


@torch.library.register_fake("xvae_fast::routed_transport_backward")
def _(grad_z, z, mu, comp, plan):
    return torch.empty_like(mu), torch.empty_like(mu)


@torch.library.register_fake("xvae_fast::draw_noise")
def _(rng_state, rows, cols, double_precision):
    eta = rng_state.new_empty((rows, cols), dtype=torch.float64 if double_precision else torch.float32)
    return eta, rng_state.new_empty((rows, cols), dtype=torch.float64), \
        rng_state.new_empty((rows,), dtype=torch.float64)


@torch.library.register_fake("xvae_fast::sample_prior")
def _(means, stds, pi_p, n, alpha, per_row, generator=None):
    return means.new_empty((n, means.shape[1])), means.new_empty((2,), dtype=torch.int64)


@torch.library.register_fake("xvae_fast::sample_prior_backward")
def _(grad_z, rng_state, means, stds, pi_p, alpha, per_row):
    return torch.empty_like(means), torch.empty_like(stds)


@torch.library.register_fake("xvae_fast::mixture_log_prob")
def _(z, log_weights, means, log_vars, return_responsibilities):
    N = z.shape[0]
    resp = z.new_empty((N, log_weights.shape[0]) if return_responsibilities else (0,))
    return z.new_empty((N,)), resp


@torch.library.register_fake("xvae_fast::mixture_log_prob_backward")
def _(grad, grad_resp, z, log_weights, means, log_vars, needs=(True, True, True, True)):
    # Gradients not asked for are undefined (None), as the kernels return them; the others are
    # contiguous, also for a broadcast (stride-0) input.
    like = (z, log_weights, means, log_vars)
    return tuple(t.new_empty(t.shape) if need else None for t, need in zip(like, needs))


@torch.library.register_fake("xvae_fast::kde_log_prob")
def _(z, centres, bandwidth, exclude_self):
    N = z.shape[0]
    return z.new_empty((N,)), z.new_empty((N,), dtype=_acc(z.dtype)), z.new_empty((N,), dtype=torch.bool)


@torch.library.register_fake("xvae_fast::kde_log_prob_backward")
def _(grad, z, centres, bandwidth, lse, direct, exclude_self):
    return z.new_empty(z.shape)


@torch.library.register_fake("xvae_fast::component_kl")
def _(mu, logvar, means, stds):
    return mu.new_empty((mu.shape[0], means.shape[0]))


@torch.library.register_fake("xvae_fast::component_kl_backward")
def _(grad, mu, logvar, means, stds):
    return mu.new_empty(mu.shape), mu.new_empty(mu.shape)


@torch.library.register_fake("xvae_fast::mixture_bound")
def _(mu, logvar, log_weights, means, stds, logits, kind, reduction, return_weights):
    B, C = mu.shape[0], means.shape[0]
    shape = (B,) if reduction == 0 else ()
    out = [mu.new_empty(shape) for _ in range(3)]
    weights = mu.new_empty((B, C) if return_weights else (0,))
    return (*out, weights, mu.new_empty((B, C), dtype=_acc(mu.dtype)))


@torch.library.register_fake("xvae_fast::mixture_bound_backward")
def _(g_total, g_cat, g_gauss, mu, logvar, log_weights, means, stds, logits, kl, kind, reduction):
    dl = mu.new_empty((mu.shape[0], means.shape[0]) if kind == "mixture" else (0,))
    return mu.new_empty(mu.shape), mu.new_empty(mu.shape), dl


# ---- autograd -------------------------------------------------------------------------------------
def _zeros_if_none(g, like):
    return torch.zeros_like(like) if g is None else g


def _mixture_kl_setup(ctx, inputs, output):
    logits, mu, logvar, log_pi_p, prior_mean, prior_std, reduction = inputs
    _, _, _, pi_q, kln_colsum = output
    ctx.save_for_backward(logits, mu, logvar, log_pi_p, prior_mean, prior_std, pi_q, kln_colsum)
    ctx.reduction = reduction


def _mixture_kl_backward(ctx, g_total, g_cat, g_gauss, _g_pi_q, _g_kc):
    logits, mu, logvar, log_pi_p, prior_mean, prior_std, pi_q, kln_colsum = ctx.saved_tensors
    ref = g_total if g_total is not None else (g_cat if g_cat is not None else g_gauss)
    g_total, g_cat, g_gauss = (_zeros_if_none(g, ref) for g in (g_total, g_cat, g_gauss))
    dl, dm, dv = ops.mixture_kl_backward(g_total, g_cat, g_gauss, logits, mu, logvar, log_pi_p,
                                         prior_mean, prior_std, pi_q, kln_colsum, ctx.reduction)
    return dl, dm, dv, None, None, None, None


torch.library.register_autograd("xvae_fast::mixture_kl_forward", _mixture_kl_backward,
                                setup_context=_mixture_kl_setup)


def _gaussian_kl_setup(ctx, inputs, output):
    mu, logvar, prior_mean, prior_std, reduction = inputs
    ctx.save_for_backward(mu, logvar, prior_mean, prior_std)
    ctx.reduction = reduction


def _gaussian_kl_backward(ctx, grad):
    mu, logvar, prior_mean, prior_std = ctx.saved_tensors
    dm, dv = ops.gaussian_kl_backward(grad, mu, logvar, prior_mean, prior_std, ctx.reduction)
    return dm, dv, None, None, None


torch.library.register_autograd("xvae_fast::gaussian_kl_forward", _gaussian_kl_backward,
                                setup_context=_gaussian_kl_setup)


def _routed_setup(ctx, inputs, output):
    mu, logvar, means, stds, pi_p, pi_q, plan, num_posterior, generator = inputs
    z, comp, _ = output
    ctx.save_for_backward(z, mu, comp, plan)


def _routed_backward(ctx, grad_z, _g_comp, _g_state):
    z, mu, comp, plan = ctx.saved_tensors
    dm, dv = ops.routed_transport_backward(_zeros_if_none(grad_z, z), z, mu, comp, plan)
    return dm, dv, None, None, None, None, None, None, None


torch.library.register_autograd("xvae_fast::routed_transport", _routed_backward,
                                setup_context=_routed_setup)


def _sample_setup(ctx, inputs, output):
    means, stds, pi_p, n, alpha, per_row, generator = inputs
    _, rng_state = output
    ctx.save_for_backward(rng_state, means, stds, pi_p)
    ctx.alpha, ctx.per_row = alpha, per_row


def _sample_backward(ctx, grad_z, _g_state):
    rng_state, means, stds, pi_p = ctx.saved_tensors
    dM, dS = ops.sample_prior_backward(grad_z, rng_state, means, stds, pi_p, ctx.alpha, ctx.per_row)
    return dM, dS, None, None, None, None, None


torch.library.register_autograd("xvae_fast::sample_prior", _sample_backward,
                                setup_context=_sample_setup)


def _mixture_log_prob_setup(ctx, inputs, output):
    z, log_weights, means, log_vars, return_responsibilities = inputs
    ctx.save_for_backward(z, log_weights, means, log_vars)
    ctx.with_resp = return_responsibilities


def _mixture_log_prob_backward(ctx, grad, grad_resp):
    z, log_weights, means, log_vars = ctx.saved_tensors
    g = _zeros_if_none(grad, z.new_empty((z.shape[0],)))
    G = grad_resp if ctx.with_resp else None
    # Only the gradients autograd asks for: a detached prior (S-IntroVAE's frozen-target KL calls)
    # costs no parameter-gradient work, detached points no dz.
    needs = list(ctx.needs_input_grad[:4])
    dz, dlw, dm, dlv = ops.mixture_log_prob_backward(g, G, z, log_weights, means, log_vars, needs)
    return dz, dlw, dm, dlv, None


torch.library.register_autograd("xvae_fast::mixture_log_prob", _mixture_log_prob_backward,
                                setup_context=_mixture_log_prob_setup)


def _kde_setup(ctx, inputs, output):
    z, centres, bandwidth, exclude_self = inputs
    _, lse, direct = output
    ctx.save_for_backward(z, centres, bandwidth, lse, direct)
    ctx.exclude_self = exclude_self
    ctx.mark_non_differentiable(lse, direct)  # internal: for the backward


def _kde_backward(ctx, grad, _g_lse, _g_direct):
    z, centres, bandwidth, lse, direct = ctx.saved_tensors
    if not ctx.needs_input_grad[0]:
        return None, None, None, None
    g = _zeros_if_none(grad, z.new_empty((z.shape[0],)))
    dz = ops.kde_log_prob_backward(g, z, centres, bandwidth, lse, direct, ctx.exclude_self)
    return dz, None, None, None  # no gradient to the centres or the bandwidth, by definition


torch.library.register_autograd("xvae_fast::kde_log_prob", _kde_backward, setup_context=_kde_setup)


def _component_kl_setup(ctx, inputs, output):
    mu, logvar, means, stds = inputs
    ctx.save_for_backward(mu, logvar, means, stds)


def _component_kl_backward(ctx, grad):
    mu, logvar, means, stds = ctx.saved_tensors
    dm, dv = ops.component_kl_backward(grad, mu, logvar, means, stds)
    return dm, dv, None, None


torch.library.register_autograd("xvae_fast::component_kl", _component_kl_backward,
                                setup_context=_component_kl_setup)


def _mixture_bound_setup(ctx, inputs, output):
    mu, logvar, log_weights, means, stds, logits, kind, reduction, return_weights = inputs
    _, _, _, weights, kl = output
    ctx.save_for_backward(mu, logvar, log_weights, means, stds, logits, kl)
    ctx.kind, ctx.reduction = kind, reduction
    ctx.mark_non_differentiable(weights, kl)  # the weights are returned detached; kl is internal


def _mixture_bound_backward(ctx, g_total, g_cat, g_gauss, _g_weights, _g_kl):
    mu, logvar, log_weights, means, stds, logits, kl = ctx.saved_tensors
    like = mu.new_empty((mu.shape[0],) if ctx.reduction == 0 else ())
    g_total, g_cat, g_gauss = (_zeros_if_none(g, like) for g in (g_total, g_cat, g_gauss))
    dm, dv, dl = ops.mixture_bound_backward(g_total, g_cat, g_gauss, mu, logvar, log_weights, means,
                                            stds, logits, kl, ctx.kind, ctx.reduction)
    return dm, dv, None, None, None, (dl if ctx.kind == "mixture" else None), None, None, None


torch.library.register_autograd("xvae_fast::mixture_bound", _mixture_bound_backward,
                                setup_context=_mixture_bound_setup)
