"""Importance-sampled negative log-likelihood (`python -m xvae_fast.evaluate --nll`, docs/evaluation.md).

For a model with a prior p(z), a decoder density p(x|z) and an encoder density q(z|x),

    log p(x) ~= logsumexp_j [log p(x|z_j) + log p(z_j) - log q(z_j|x)] - log k,   z_j ~ q(z|x),

(Burda et al.'s estimator; the papers' k = 5000). It is a consistent estimate of log p(x) of the
generative model p(z) p(x|z) (q is only the proposal) and, by Jensen, a lower bound in expectation
that rises with k. `importance_sampled_nll` returns -log p(x) per example, processing the k samples in
chunks (at most `chunk` per example, so at most N x chunk decoded examples at a time, whatever k) and
combining the chunks' logsumexps; `dataset_nll` averages it over a dataset in batches, with the
standard error over examples.

What each model contributes (`check_nll_supported` says why a model is refused):
- standard VAE (`VAE` mode standard): q = N(mu, diag sigma^2), p(z) = N(0, I);
- single-Gaussian X-VAE (`VAE` mode single): q = N(mu, diag sigma^2), p(z) = the frozen N(mu_AE,
  diag sigma_AE^2);
- mixture X-VAE (`VAE` mode mixture): p(z) = the frozen mixture prior (`mixture_log_prob`, log weights
  log pi_p, log variances 2 log S). q(z|x) is the law of the training-time code z =
  routed_transport(mu, logvar, prior, plan), drawn by that op; per coordinate k with component c
  (SPEC "Routed transport"): transport gives N(mu_k + sigma_k (M[c,k] - m_k) / s_k, (sigma_k
  S[c,k] / s_k)^2), direct draws N(M[c,k], S[c,k]^2) (source prior), N(M[c,c], S[c,c]^2) (prior_home)
  or N(mu_c, sigma_c^2) (posterior). Route home fixes c = k (so the `matched` plan, every coordinate
  home + transport, is exactly q = N(mu, diag sigma^2), Lemma 3); route prior draws c ~ Cat(pi_p) per
  coordinate (tie none: q is a product of one-dimensional mixtures, Proposition 1 for transport) or
  once per row for the tied coordinates (tie row: one K_tied-dimensional mixture over c). Plans that
  route by pi_q (`interleaved`, `k1-pq-*`) are refused: pi_q is a mean over the training batch, so
  their q(z|x) depends on the other rows of a batch and is not a density of z given x alone;
- VampPrior / MoG prior (`MixturePriorVAE`): q = N(mu, diag sigma^2), p(z) = their mixture
  (`prior_components()`, the same mixture their `log_prior` evaluates);
- hierarchical VAE: z = [z1, z2], q(z2|x) q(z1|x, z2) (the ladder's precision-weighted merge at the
  sampled z2), p(z2) p(z1|z2) = N(0, I) N(mu_p(z2), diag exp(logvar_p(z2))): both levels are sampled
  and the joint densities used;
- GM-VAE: the discrete y is marginalised exactly on both sides: p(z) = sum_y (1/C) N(z; m_y, diag
  exp(v_y)), q(z|x) = sum_y q(y|x) N(z; mu_y(x), diag exp(logvar_y(x))) (the encoder's per-cluster
  heads with a hard y; training relaxes y with the Gumbel-Softmax, whose continuous relaxation has
  no closed-form density of z; any proposal with a known density gives an estimate of the same
  log p(x)).
The decoder density is `likelihood.nll_rows`: `bernoulli` (nats; a true log-probability for binary
data, e.g. `--nll-binarize`) or `gaussian` (nats, with the learned variance). `mse` is a squared
error, not a density, and is refused, as are models with no encoder density or no prior.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..data.binarize import FIXED_BATCH, FIXED_SEED, binarize_fixed
from ..errors import ConfigError, DataError

LOG_2PI = math.log(2 * math.pi)
DEFAULT_K = 500            # importance samples per example (see docs/evaluation.md: cost and the gap to 5000)
PAPER_K = 5000             # the papers' k (Burda et al.; VampPrior's code)
DEFAULT_N = 1000           # test examples: a seeded subset of the test split
DEFAULT_BATCH = 50         # examples per importance-sampling batch
DECODED_ELEMENTS = 1 << 22 # default chunk: about this many decoded values (rows x D) per decoder call
BINARIZE_SEED = FIXED_SEED          # the fixed seed of --nll-binarize
BINARIZE_BATCH = FIXED_BATCH    # the test split is binarised in order, in batches of this size
_BLOCK_ELEMENTS = 1 << 22  # float64 elements of a (rows, coordinates, components) temporary
NLL_SEED_OFFSET = 16       # the importance-sampling noise: --seed + 16 (units.py's offsets are 11-15)


class NLLUndefinedError(ConfigError):
    """The negative log-likelihood is not defined (or not available) for this model."""


# -- what is supported --------------------------------------------------------------------------------

_NO_DENSITY = {
    "Autoencoder": "a deterministic autoencoder: its encoder gives one code per input, not a density "
                   "q(z|x), and it has no prior",
    "ExPostModel": "the ex-post reference decodes samples of the fitted prior with the deterministic "
                   "stage-1 autoencoder; it has no encoder density q(z|x)",
    "AVAE": "the AVAE's encoder is deterministic (z = E(x), no variance head), so there is no encoder "
            "density q(z|x) to importance-sample from",
    "TwoStageVAE": "the Two-Stage VAE samples z = f2(u) through its second VAE, whose marginal density "
                   "p(z) is itself an intractable integral over u; the chained estimator (nested "
                   "importance sampling over both stages' latents) is not implemented",
    "UnscentedAE": "the Unscented Autoencoder family reconstructs with a squared error of sigma-point "
                   "decodings and samples from a mixture fitted after training, not from a prior it was "
                   "trained with: there is no decoder density or model prior to evaluate",
    "IntroPriorVAE": "S-IntroVAE's decoder is deterministic (its reconstruction is the squared error, "
                     "--likelihood mse only), so p(x|z) is not a density",
    "Stage1Sampler": "a reference sampler (no encoder density)",
    "NormalSampler": "a reference sampler (no encoder density)",
}
MSE_MESSAGE = "--likelihood mse is a squared error, not a density; the NLL is not defined"


def _family(model) -> str:
    from ..models.baseline import MixturePriorVAE
    from ..models.gmvae import GMVAE
    from ..models.hierarchical import HierarchicalVAE
    from ..models.vae import VAE
    if isinstance(model, VAE):
        return "vae"
    if isinstance(model, HierarchicalVAE):
        return "hierarchical"
    if isinstance(model, GMVAE):
        return "gmvae"
    if isinstance(model, MixturePriorVAE):
        return "mixture_prior"
    name = type(model).__name__
    reason = _NO_DENSITY.get(name, "it has no encoder density q(z|x) and prior p(z) that the estimator "
                                   "knows")
    raise NLLUndefinedError(f"the negative log-likelihood is not available for {name} "
                            f"({getattr(model, 'mode', '?')}): {reason}")


def _plan_refusal(plan) -> Optional[str]:
    routed = [k for k, c in enumerate(plan.coordinates) if c.route == "posterior"]
    if routed:
        return (f"plan {plan.name!r} routes coordinate(s) {routed[:5]}{'...' if len(routed) > 5 else ''} "
                "by pi_q, the mean of the responsibilities over the training batch: its q(z|x) depends "
                "on the other rows of a batch, so it is not a density of z given x and the "
                "importance-sampled NLL is not defined for it (plans routed by pi_p or home are: "
                "matched, full, split-*, k1-pp-*)")
    return None


def check_nll_supported(model) -> str:
    """The model's family ('vae', 'hierarchical', 'gmvae', 'mixture_prior') if the importance-sampled
    NLL is defined for it; else NLLUndefinedError saying why."""
    family = _family(model)
    lik = getattr(model, "likelihood", None)
    name = getattr(lik, "name", None)
    if name == "mse":
        raise NLLUndefinedError(MSE_MESSAGE)
    if name not in ("bernoulli", "gaussian"):
        raise NLLUndefinedError(f"the NLL needs a decoder density (--likelihood bernoulli or gaussian); "
                                f"{type(model).__name__} has {name!r}")
    if family == "vae":
        if model.prior is None:
            raise NLLUndefinedError("the VAE has no prior yet (the run stopped before its prior fit)")
        if model.mode == "mixture":
            reason = _plan_refusal(model.plan)
            if reason:
                raise NLLUndefinedError(reason)
    return family


def describe(model) -> Dict[str, str]:
    """The prior and the proposal the estimator uses for `model` (for the report)."""
    family = check_nll_supported(model)
    if family == "vae":
        if model.mode == "standard":
            return {"prior": "N(0, I)", "proposal": "q(z|x) = N(mu, diag sigma^2)"}
        if model.mode == "single":
            return {"prior": "the frozen single Gaussian N(mu_AE, diag sigma_AE^2)",
                    "proposal": "q(z|x) = N(mu, diag sigma^2)"}
        if _all_gaussian(model.plan):
            q = "q(z|x) = N(mu, diag sigma^2) (every coordinate home-routed)"
        else:
            q = (f"q(z|x) = the law of routed_transport under plan {model.plan.name!r} (per-coordinate "
                 "mixtures over pi_p; tied coordinates share one component)")
        return {"prior": f"the frozen C = {model.prior.num_components} diagonal mixture prior",
                "proposal": q}
    if family == "hierarchical":
        return {"prior": "p(z2) p(z1|z2) = N(0, I) N(mu_p(z2), diag exp(logvar_p(z2)))",
                "proposal": "q(z2|x) q(z1|x, z2) (the ladder's merge), both levels sampled"}
    if family == "gmvae":
        return {"prior": "sum_y (1/C) N(m_y, diag exp(v_y)) (y marginalised)",
                "proposal": "sum_y q(y|x) N(mu_y(x), diag exp(logvar_y(x))) (y marginalised)"}
    return {"prior": f"the {getattr(model, 'mode', '')} mixture prior (prior_components)",
            "proposal": "q(z|x) = N(mu, diag sigma^2)"}


def _all_gaussian(plan) -> bool:
    return all(c.route == "home" for c in plan.coordinates)


def check_k(k) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or int(k) < 1:
        raise ConfigError(f"--nll-k (importance samples per example) must be a positive integer, got {k!r}")
    return int(k)


# -- densities ----------------------------------------------------------------------------------------

def log_normal(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; mu, diag exp(logvar)) summed over the last dimension (float64)."""
    z, mu, logvar = z.double(), mu.double(), logvar.double()
    return -0.5 * (LOG_2PI + logvar + (z - mu).pow(2) * torch.exp(-logvar)).sum(-1)


def _log_normal_std(z, mean, std):
    """Elementwise log N(z; mean, std^2) (float64)."""
    return -0.5 * LOG_2PI - torch.log(std) - 0.5 * ((z - mean) / std).pow(2)


def _mixture_log_prob(z: torch.Tensor, log_weights, means, log_vars) -> torch.Tensor:
    """log sum_c w_c N(z; means[c], diag exp(log_vars[c])) in float64 through the fused op."""
    from ..ops.functional import mixture_log_prob
    z = z.double()
    return mixture_log_prob(z, log_weights.double().to(z.device), means.double().to(z.device),
                            log_vars.double().to(z.device))


def _prior_tensors(prior):
    """(log weights (normalised; zero weights -inf), means, log variances) of a MixturePrior, float64."""
    w = prior.weights.double()
    lw = torch.log(w) - torch.log(w.sum())
    return lw, prior.means.double(), 2 * torch.log(prior.stds.double())


def _rows(width: int) -> int:
    """Rows per block so that a (rows, width) float64 temporary stays within _BLOCK_ELEMENTS."""
    return max(1, _BLOCK_ELEMENTS // max(1, width))


def routed_log_q(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, prior, plan) -> torch.Tensor:
    """log q(z|x) (R,) float64 of the routed-transport code under a plan routed by pi_p or home (SPEC
    "Routed transport", steps 1-4): per coordinate, a Gaussian per component c; route home: c = k;
    route prior: a mixture over c ~ Cat(pi_p), per coordinate (tie none) or shared by the tied
    coordinates of a row (tie row)."""
    reason = _plan_refusal(plan)
    if reason:
        raise NLLUndefinedError(reason)
    z, mu, logvar = z.double(), mu.double(), logvar.double()
    R, K = z.shape
    lw, M, _ = _prior_tensors(prior)
    M, S = M.to(z.device), prior.stds.double().to(z.device)
    lw = lw.to(z.device)
    C = M.shape[0]
    m, s = torch.diagonal(M), torch.diagonal(S)
    sigma = torch.exp(0.5 * logvar)
    coords = plan.coordinates
    total = torch.zeros(R, dtype=torch.float64, device=z.device)

    def params(k_idx: torch.Tensor, every_c: bool, rows: slice, kind: Tuple[str, str]):
        """Mean and std of coordinates k_idx of the rows, for every component c ((r, |k|, C), route
        prior) or for c = k only ((r, |k|), route home)."""
        mode, source = kind
        mu_r, sg_r = mu[rows][:, k_idx], sigma[rows][:, k_idx]
        if not every_c:                               # c = k
            if mode == "transport" or source == "posterior":
                return mu_r, sg_r
            return M[k_idx, k_idx][None].expand_as(mu_r), S[k_idx, k_idx][None].expand_as(mu_r)
        if mode == "transport":                       # (r, n, C)
            shift = ((M[:, k_idx] - m[k_idx]) / s[k_idx]).T[None]
            scale = (S[:, k_idx] / s[k_idx]).T[None]
            return mu_r[..., None] + sg_r[..., None] * shift, sg_r[..., None] * scale
        n = len(k_idx)
        if source == "prior":
            return M[:, k_idx].T[None], S[:, k_idx].T[None]
        if source == "prior_home":
            return (torch.diagonal(M)[None, None].expand(1, n, C),
                    torch.diagonal(S)[None, None].expand(1, n, C))
        return mu[rows][:, None, :].expand(-1, n, -1), sigma[rows][:, None, :].expand(-1, n, -1)

    kinds = sorted({(c.mode, c.source) for c in coords})
    # home-routed coordinates: one Gaussian each
    for kind in kinds:
        idx = [k for k, c in enumerate(coords) if c.route == "home" and (c.mode, c.source) == kind]
        if idx:
            k_idx = torch.tensor(idx, device=z.device)
            mean, std = params(k_idx, False, slice(None), kind)
            total += _log_normal_std(z[:, k_idx], mean, std).sum(1)
    # prior-routed coordinates: mixtures over c, per coordinate or shared by the tied ones
    for tie in ("none", "row"):
        groups = [(kind, [k for k, c in enumerate(coords) if c.route == "prior" and c.tie == tie
                          and (c.mode, c.source) == kind]) for kind in kinds]
        groups = [(kind, idx) for kind, idx in groups if idx]
        if not groups:
            continue
        n_all = sum(len(idx) for _, idx in groups)
        step = _rows(n_all * C)
        for r0 in range(0, R, step):
            rows = slice(r0, min(R, r0 + step))
            acc = torch.zeros(rows.stop - r0, C, dtype=torch.float64, device=z.device)
            for kind, idx in groups:
                k_idx = torch.tensor(idx, device=z.device)
                mean, std = params(k_idx, True, rows, kind)
                lp = _log_normal_std(z[rows][:, k_idx, None], mean, std)          # (r, n, C)
                if tie == "none":
                    total[rows] += torch.logsumexp(lp + lw, dim=2).sum(1)
                else:
                    acc += lp.sum(1)
            if tie == "row":
                total[rows] += torch.logsumexp(acc + lw, dim=1)
    return total


# -- the per-family proposals -------------------------------------------------------------------------

class _Proposal:
    """One batch x: `draw(g)` one z (N, K) per example (sample-major calls, so the draws do not depend
    on the chunking), `log_pq(z, rep)` (log p(z), log q(z|x)) float64 for z (rep N, K) whose row
    j N + i belongs to example i."""

    def __init__(self, model, x):
        self.model, self.x, self.N = model, x, x.shape[0]

    def rep(self, t: torch.Tensor, rep: int) -> torch.Tensor:
        return t.repeat(rep, *([1] * (t.dim() - 1)))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.model.decoder(z)


def _randn(shape, like, generator):
    g = {} if generator is None else {"generator": generator}
    return torch.randn(shape, dtype=like.dtype, device=like.device, **g)


class _GaussianQ(_Proposal):
    def __init__(self, model, x, mu, logvar, log_prior: Callable[[torch.Tensor], torch.Tensor]):
        super().__init__(model, x)
        self.mu, self.logvar, self.log_prior = mu, logvar, log_prior

    def draw(self, generator):
        return self.mu + torch.exp(0.5 * self.logvar) * _randn(self.mu.shape, self.mu, generator)

    def log_pq(self, z, rep):
        return self.log_prior(z), log_normal(z, self.rep(self.mu, rep), self.rep(self.logvar, rep))


class _XVAEQ(_Proposal):
    """The X-VAE's own code: drawn by model.latent_code (the training-time op), density as above."""

    def __init__(self, model, x):
        super().__init__(model, x)
        _, self.mu, self.logvar = model.encode(x)
        self.prior = _prior_tensors(model.prior)

    def draw(self, generator):
        return self.model.latent_code(self.mu, self.logvar, None, generator)

    def log_pq(self, z, rep):
        mu, lv = self.rep(self.mu, rep), self.rep(self.logvar, rep)
        log_p = _mixture_log_prob(z, *self.prior)
        if self.model.mode != "mixture" or _all_gaussian(self.model.plan):
            return log_p, log_normal(z, mu, lv)
        return log_p, routed_log_q(z, mu, lv, self.model.prior, self.model.plan)


class _HierarchicalQ(_Proposal):
    def __init__(self, model, x):
        super().__init__(model, x)
        self.mu_hat, self.lv_hat, self.mu2, self.lv2 = model._bottom_up(x)

    def draw(self, generator):
        m = self.model
        z2 = self.mu2 + torch.exp(0.5 * self.lv2) * _randn(self.mu2.shape, self.mu2, generator)
        mu1, lv1 = m._merge(self.mu_hat, self.lv_hat, *m.conditional_prior(z2))
        z1 = mu1 + torch.exp(0.5 * lv1) * _randn(mu1.shape, mu1, generator)
        return torch.cat([z1, z2], 1)

    def log_pq(self, z, rep):
        m = self.model
        z1, z2 = z[:, :m.bottom], z[:, m.bottom:]
        mu_p, lv_p = m.conditional_prior(z2)
        mu1, lv1 = m._merge(self.rep(self.mu_hat, rep), self.rep(self.lv_hat, rep), mu_p, lv_p)
        log_q = log_normal(z1, mu1, lv1) + log_normal(z2, self.rep(self.mu2, rep), self.rep(self.lv2, rep))
        log_p = log_normal(z1, mu_p, lv_p) + log_normal(z2, torch.zeros_like(z2), torch.zeros_like(z2))
        return log_p, log_q


class _GMVAEQ(_Proposal):
    def __init__(self, model, x):
        super().__init__(model, x)
        logits, self.mu_c, self.lv_c = model._heads(x)
        self.log_qy = torch.log_softmax(logits.double(), -1)
        C = model.clusters
        self.prior = (torch.full((C,), -math.log(C), dtype=torch.float64, device=x.device),
                      model.prior_means.double(), model.prior_logvars.double())

    def draw(self, generator):
        g = {} if generator is None else {"generator": generator}
        y = torch.multinomial(self.log_qy.exp(), 1, **g).squeeze(1)
        rows = torch.arange(self.N, device=y.device)
        mu, lv = self.mu_c[rows, y], self.lv_c[rows, y]
        return mu + torch.exp(0.5 * lv) * _randn(mu.shape, mu, generator)

    def log_pq(self, z, rep):
        R, K = z.shape
        C = self.log_qy.shape[1]
        log_q = torch.empty(R, dtype=torch.float64, device=z.device)
        step = _rows(C * K)
        for r0 in range(0, R, step):
            r1 = min(R, r0 + step)
            ex = torch.arange(r0, r1, device=z.device) % self.N          # the example of each row
            lp = log_normal(z[r0:r1, None, :], self.mu_c[ex], self.lv_c[ex])   # (r, C)
            log_q[r0:r1] = torch.logsumexp(lp + self.log_qy[ex], dim=1)
        return _mixture_log_prob(z, *self.prior), log_q


def _proposal(model, x) -> _Proposal:
    family = check_nll_supported(model)
    if family == "vae":
        return _XVAEQ(model, x)
    if family == "hierarchical":
        return _HierarchicalQ(model, x)
    if family == "gmvae":
        return _GMVAEQ(model, x)
    _, mu, logvar = model.encode(x)
    comps = tuple(t.double() for t in model.prior_components())   # once per batch (VampPrior: encodes u)
    return _GaussianQ(model, x, mu, logvar, lambda z: _mixture_log_prob(z, *comps))


# -- the estimator ------------------------------------------------------------------------------------

@torch.no_grad()
def importance_sampled_nll(model, x: torch.Tensor, k: int, chunk: Optional[int] = None, generator=None,
                           return_diagnostics: bool = False):
    """-log p(x) per example (N,) float64 (on x's device), by importance sampling with k draws of the
    model's q(z|x) (module docstring). The k draws are taken `chunk` per example at a time (default:
    about 4M decoded values per call, e.g. 5,300 MNIST images), so at most N x chunk examples are
    decoded at once, and the chunks' logsumexps are combined; each draw is its own call on
    `generator` (the global RNG when None), so the result does not depend on `chunk`. The model is
    evaluated in eval mode (restored after). With return_diagnostics also {"ess": (N,) the effective
    sample sizes (sum w)^2 / sum w^2, "mc_stderr": (N,) the delta-method standard error of each
    log p(x) estimate, sqrt(1/ess - 1/k)}."""
    k = check_k(k)
    check_nll_supported(model)
    if not isinstance(x, torch.Tensor) or x.dim() < 2 or x.shape[0] < 1:
        raise ValueError(f"x must be a non-empty batch (N, ...), got {getattr(x, 'shape', type(x).__name__)}")
    N = x.shape[0]
    if chunk is None:
        chunk = max(1, DECODED_ELEMENTS // (N * x[0].numel()))
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be a positive integer, got {chunk!r}")
    chunk = min(chunk, k)
    lik = model.likelihood
    was_training = model.training
    model.eval()
    try:
        q = _proposal(model, x)
        dev = x.device
        s1 = torch.full((N,), -math.inf, dtype=torch.float64, device=dev)
        s2 = s1.clone()
        x64 = x.double()
        for j0 in range(0, k, chunk):
            c = min(chunk, k - j0)
            z = torch.cat([q.draw(generator) for _ in range(c)])
            log_p, log_q = q.log_pq(z, c)
            log_px_z = -lik.nll_rows(q.decode(z).double(), q.rep(x64, c)).double()
            log_w = (log_px_z + log_p - log_q).view(c, N)
            if torch.isnan(log_w).any():
                raise DataError("the importance weights are NaN (a non-finite decoder output, encoder "
                                "output or prior density)")
            s1 = torch.logaddexp(s1, torch.logsumexp(log_w, 0))
            s2 = torch.logaddexp(s2, torch.logsumexp(2 * log_w, 0))
    finally:
        model.train(was_training)
    nll = -(s1 - math.log(k))
    if not return_diagnostics:
        return nll
    ess = torch.exp(2 * s1 - s2)
    mc = torch.sqrt((1.0 / ess - 1.0 / k).clamp_min(0.0))
    return nll, {"ess": ess, "mc_stderr": mc}


def _get(data, rows: np.ndarray) -> torch.Tensor:
    rows = torch.as_tensor(rows)
    return data[rows] if isinstance(data, torch.Tensor) else data.get_batch(rows)


def dataset_nll(model, data, k: int, batch: int = DEFAULT_BATCH, chunk: Optional[int] = None,
                seed: int = 0, device=None, indices: Optional[Sequence[int]] = None,
                progress: bool = False, desc: str = "NLL") -> Dict[str, Any]:
    """The importance-sampled NLL over a dataset (a tensor (N, ...) or an XDataset, optionally the rows
    `indices`), in batches of `batch` examples with one generator seeded `seed` on the model's device:
    {"mean", "stderr" (over examples, ddof 1), "n", "k", "ess_mean", "mc_stderr_mean", "values"
    (float64 CPU tensor of the per-example NLLs)}."""
    k = check_k(k)
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ConfigError(f"the NLL batch must be a positive integer, got {batch!r}")
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    g = torch.Generator(device=dev).manual_seed(int(seed))
    idx = np.arange(data.shape[0] if isinstance(data, torch.Tensor) else len(data)) if indices is None \
        else np.asarray(indices, dtype=np.int64)
    vals, ess, mc = [], [], []
    starts = range(0, len(idx), batch)
    if progress:
        from ..progress import progress_bar
        starts = progress_bar(starts, desc=desc, unit="batch")
    for s in starts:
        xb = _get(data, idx[s:s + batch])
        v, d = importance_sampled_nll(model, xb.float().to(dev), k, chunk, g, return_diagnostics=True)
        vals.append(v.cpu())
        ess.append(d["ess"].cpu())
        mc.append(d["mc_stderr"].cpu())
    if not vals:
        raise DataError("the NLL needs at least one example")
    values = torch.cat(vals)
    n = values.numel()
    if not torch.isfinite(values).all():
        raise DataError(f"the NLL is not finite for {int((~torch.isfinite(values)).sum())} of {n} examples")
    return {"mean": float(values.mean()),
            "stderr": float(values.std(unbiased=True) / math.sqrt(n)) if n > 1 else 0.0,
            "n": n, "k": k, "ess_mean": float(torch.cat(ess).mean()),
            "mc_stderr_mean": float(torch.cat(mc).mean()), "values": values}


# -- binarisation and the evaluate hook ---------------------------------------------------------------

def check_binarizable(info, split) -> None:
    if info.kind != "image":
        raise ConfigError(f"--nll-binarize binarises images with pixel intensities in [0, 1]; dataset "
                          f"{info.name!r} holds {info.shape[0]}-d vectors")


def binarize(split, indices: Sequence[int], seed: int = BINARIZE_SEED,
             batch: int = BINARIZE_BATCH) -> torch.Tensor:
    """The rows `indices` of the test split binarised once (data/binarize.py, the protocol shared with
    the trainer's `--binarize dynamic`)."""
    return binarize_fixed(split, indices, seed, batch, what="the test split (--nll-binarize)")


@dataclasses.dataclass
class NLLOptions:
    """`evaluate --nll`: k importance samples for n test examples (a seeded subset), optionally
    binarised (the papers' protocol)."""
    k: int = DEFAULT_K
    n: int = DEFAULT_N
    binarize: bool = False
    batch: int = DEFAULT_BATCH
    chunk: Optional[int] = None

    def validate(self) -> "NLLOptions":
        check_k(self.k)
        if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 1:
            raise ConfigError(f"--nll-n (test examples) must be a positive integer, got {self.n!r}")
        if isinstance(self.batch, bool) or not isinstance(self.batch, int) or self.batch < 1:
            raise ConfigError(f"the NLL batch must be a positive integer, got {self.batch!r}")
        return self


def evaluate_nll(model, split, info, opts: NLLOptions, seed: int, device, notes: List[str],
                 log=lambda msg: None, progress: bool = False) -> Dict[str, Any]:
    """The `nll` entry of eval.json: the NLL of `model` on a seeded subset of the test split."""
    family = check_nll_supported(model)
    n_avail = len(split)
    n = min(opts.n, n_avail)
    if n < opts.n:
        notes.append(f"the test split has {n_avail} examples, fewer than --nll-n {opts.n}; the NLL uses "
                     f"all {n_avail}")
    idx = np.sort(np.random.default_rng(seed).permutation(n_avail)[:n])
    lik = model.likelihood.name
    if opts.binarize:
        check_binarizable(info, split)
        data, indices = binarize(split, idx), None
        binarization = {"binarized": True, "seed": BINARIZE_SEED,
                        "method": f"torch.bernoulli(pixel intensity) with a torch.Generator seeded "
                                  f"{BINARIZE_SEED}, the test split read in order in batches of "
                                  f"{BINARIZE_BATCH} (fixed once; the papers' protocol)"}
    else:
        data, indices = split, idx
        binarization = {"binarized": False, "method": "none: the model-space test data as stored"}
        if lik == "bernoulli" and info.kind == "image":
            notes.append("NLL with --likelihood bernoulli on grey-level (not binarised) images: the "
                         "value is the cross-entropy of the intensities, not a log-probability of "
                         "discrete data; --nll-binarize gives the papers' protocol")
    noise_seed = seed + NLL_SEED_OFFSET
    r = dataset_nll(model, data, opts.k, opts.batch, opts.chunk, noise_seed, device, indices,
                    progress=progress and n > 4 * opts.batch, desc=f"NLL (k = {opts.k})")
    r.pop("values")
    entry = dict(r, split="test", likelihood=lik, family=family, **describe(model),
                 binarization=binarization, units="nats per example",
                 description=f"importance-sampled negative log-likelihood -log p(x), k = {opts.k} draws "
                             "of q(z|x) per example, mean over the test examples with its standard "
                             "error; a stochastic upper bound on the true NLL that falls towards it as "
                             f"k grows (the papers use k = {PAPER_K})",
                 protocol={"seed": seed, "noise_seed": noise_seed, "n_requested": opts.n,
                           "subset": "seeded subset of the test split (the rows --n-real would take)",
                           "batch": opts.batch, "chunk": opts.chunk, "k": opts.k})
    if info.kind == "vector" and info.mean is not None and lik == "gaussian":
        offset = float(torch.log(torch.as_tensor(info.std, dtype=torch.float64)).sum())
        entry["data_space_mean"] = entry["mean"] + offset
        notes.append(f"the NLL is in nats of the standardised vectors (model space); in data units add "
                     f"sum(log std) = {offset:.4g} (data_space_mean)")
    log(f"NLL (k = {opts.k}, {n} test examples{', binarised' if opts.binarize else ''}): "
        f"{entry['mean']:.3f} ± {entry['stderr']:.3f} nats")
    return entry

