"""Gumbel-Softmax GM-VAE (Dilokthanakul et al., 2016; Jang et al., 2017): a Gaussian-mixture VAE with a
discrete cluster variable y in {1..C} and a continuous z (K coordinates).

Generative model: y ~ Cat(1/C), z | y ~ N(m_y, diag(exp(v_y))) (the learned per-cluster prior heads),
x | z ~ decoder(z). Inference: q(y|x) = Cat(softmax(l(x))) and per-cluster Gaussian encoder heads
q(z|x, y) = N(mu_y(x), diag(exp(logvar_y(x)))) (one K-dimensional head per cluster: the model's large
parameter count in the paper's Table 4). Training relaxes y with the Gumbel-Softmax: y_soft =
softmax((l + g) / tau), g ~ Gumbel(0, 1); the Gaussian parameters of the encoder and of the prior are
the y_soft-weighted combinations of the per-cluster heads, z is reparameterised from the encoder's,
and the loss is

    recon + KL(q(y|x) || Cat(1/C)) + [log q(z|x, y_soft) - log p(z|y_soft)],

the categorical KL in closed form (`kl_cat`) and the Gaussian part as its single-sample Monte Carlo
estimate (`kl_gauss`, which can be slightly negative). The temperature tau anneals from
`--gumbel-tau-start` to `--gumbel-tau-end` as a function of the global optimizer step (so a resumed run
continues exactly): `exp` is Jang et al.'s tau = max(end, start exp(-r t)) with r chosen to reach `end`
after `--gumbel-anneal-steps` steps (default: the whole training), `linear` interpolates, `none` keeps
tau = start. Sampling draws y uniformly and z ~ N(m_y, (alpha exp(v_y / 2))^2). The prior's trainable
parameters are the per-cluster means and log-variances: 2 C K (paper Table 4: 1.3k on MNIST).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Iterable, Optional, Sequence

import torch
from torch import nn

from .baseline import BaselineVAE, SizedPriorRecipe, log_normal, reparameterize, sample_diag_mixture
from ..errors import ConfigError
from ..options import ModelOptions, option
from .protocol import register
from ..shard import rand_rows

ANNEALS = ("exp", "linear", "none")


def gumbel_temperature(step: int, start: float = 1.0, end: float = 0.5, anneal: str = "exp",
                       anneal_steps: int = 0) -> float:
    """The Gumbel-Softmax temperature at global optimizer step `step` (a pure function of the step)."""
    if anneal not in ANNEALS:
        raise ValueError(f"anneal must be one of {ANNEALS}, got {anneal!r}")
    if anneal == "none" or anneal_steps <= 0 or start == end:
        return float(start)
    t = min(max(step, 0), anneal_steps) / anneal_steps
    if anneal == "linear":
        return float(start + (end - start) * t)
    rate = math.log(start / end) / anneal_steps                 # tau(anneal_steps) = end
    return float(max(end, start * math.exp(-rate * min(max(step, 0), anneal_steps))))


def gumbel_softmax(logits: torch.Tensor, tau: float, generator=None) -> torch.Tensor:
    """A relaxed one-hot sample softmax((logits + g) / tau), g ~ Gumbel(0, 1), drawn with `generator`."""
    u = rand_rows(logits.shape, dtype=logits.dtype, device=logits.device, generator=generator)
    tiny = torch.finfo(logits.dtype).tiny
    e = -torch.log(u.clamp_min(tiny))                            # Exp(1)
    g = -torch.log(e.clamp_min(tiny))
    return torch.softmax((logits + g) / tau, dim=-1)


def _mix(y: torch.Tensor, heads: torch.Tensor) -> torch.Tensor:
    """sum_c y[b, c] heads[(b,) c, k]: the y-weighted combination of per-cluster parameters, elementwise
    in float32 (not a matmul, which autocast would round to bf16)."""
    if heads.dim() == 2:
        heads = heads[None]
    return (y[:, :, None] * heads).sum(1)


class GMVAE(BaselineVAE):
    mode = "gmvae"

    def __init__(self, kind: str, shape: Sequence[int], latent: int, clusters: int = 10,
                 tau_start: float = 1.0, tau_end: float = 0.5, anneal: str = "exp", anneal_steps: int = 0,
                 hidden: Sequence[int] = (128, 128), ops=None, likelihood=None):
        super().__init__(kind, shape, latent, hidden, ops, likelihood)
        if clusters < 1:
            raise ValueError(f"the GM-VAE needs at least one cluster, got {clusters}")
        gumbel_temperature(0, tau_start, tau_end, anneal, anneal_steps)  # validate
        self.clusters = clusters
        self.tau_start, self.tau_end, self.anneal = float(tau_start), float(tau_end), anneal
        self.anneal_steps = int(anneal_steps)
        self._horizon = int(anneal_steps)
        f = self.body.features
        self.logits_head = nn.Linear(f, clusters)
        self.heads = nn.Linear(f, clusters * 2 * latent)         # per-cluster (mu_y, logvar_y)
        self.prior_means = nn.Parameter(torch.randn(clusters, latent))
        self.prior_logvars = nn.Parameter(torch.zeros(clusters, latent))
        self.register_buffer("tau", torch.tensor(float(tau_start)))

    # -- temperature schedule -------------------------------------------------------------------------
    def set_total_steps(self, total: int) -> None:
        self._horizon = self.anneal_steps if self.anneal_steps > 0 else int(total)

    def temperature(self, step: int) -> float:
        return gumbel_temperature(step, self.tau_start, self.tau_end, self.anneal, self._horizon)

    def set_step(self, step: int) -> None:
        self.tau.fill_(self.temperature(step))

    # -- model ----------------------------------------------------------------------------------------
    def prior_parameters(self) -> Iterable[nn.Parameter]:
        return [self.prior_means, self.prior_logvars]

    def _heads(self, x):
        h = self.body(x)
        logits = self.logits_head(h).float()
        stats = self.heads(h).float().view(x.shape[0], self.clusters, 2, self.latent)
        return logits, stats[:, :, 0], stats[:, :, 1]

    def encode(self, x: torch.Tensor):
        """(logits of q(y|x), mu, logvar) with the Gaussian heads weighted by q(y|x)."""
        logits, mu_c, lv_c = self._heads(x)
        q = torch.softmax(logits, -1)
        return logits, _mix(q, mu_c), _mix(q, lv_c)

    def _loss_terms(self, x, generator=None):
        logits, mu_c, lv_c = self._heads(x)
        y = gumbel_softmax(logits, float(self.tau), generator)
        mu, logvar = _mix(y, mu_c), _mix(y, lv_c)
        z = reparameterize(mu, logvar, generator)
        mu_p, lv_p = _mix(y, self.prior_means.float()), _mix(y, self.prior_logvars.float())
        kl_gauss = (log_normal(z, mu, logvar) - log_normal(z, mu_p, lv_p)).mean()
        log_q = torch.log_softmax(logits, -1)
        kl_cat = (log_q.exp() * (log_q + math.log(self.clusters))).sum(-1).mean()
        return self.decoder(z), z, mu, logvar, logits, kl_cat, kl_gauss

    def sample_latent(self, n: int, alpha: float = 1.0, generator=None) -> torch.Tensor:
        m = self.prior_means.float()
        w = torch.full((self.clusters,), 1.0 / self.clusters, dtype=m.dtype, device=m.device)
        return sample_diag_mixture(self.ops, w, m, torch.exp(0.5 * self.prior_logvars.float()), n, alpha,
                                   generator)


# the 2-D benchmark: 8 (the modes of 8gaussians, the squares of checkerboard)
CLUSTERS = {"clusters": 3, "8gaussians": 8, "2spirals": 8, "checkerboard": 8, "rings": 8, "*": 10}


@dataclasses.dataclass
class GMVAEOptions(ModelOptions):
    gmvae_clusters: Optional[int] = option(None, "values of the discrete cluster variable", type="int",
                                           flag="--clusters", metavar="C", minimum=1, per_dataset=CLUSTERS)
    gumbel_tau_start: float = option(1.0, "Gumbel-Softmax temperature at the first step", metavar="T",
                                     above=0)
    gumbel_tau_end: float = option(0.5, "temperature after the anneal", metavar="T", above=0)
    gumbel_anneal: str = option("exp", "temperature schedule over the global step (exp: tau = max(end, "
                                "start*exp(-r*step)))", choices=ANNEALS)
    gumbel_anneal_steps: int = option(0, "steps to reach the end temperature (0: the whole training)",
                                      metavar="N", minimum=0)

    def finish(self, cfg, kind):
        if self.gumbel_tau_end > self.gumbel_tau_start:
            raise ConfigError(f"the Gumbel-Softmax temperature anneals downwards: --gumbel-tau-end "
                              f"({self.gumbel_tau_end}) must be <= --gumbel-tau-start ({self.gumbel_tau_start})")
        return self


@register
class GMVAERecipe(SizedPriorRecipe):
    name = "gmvae"
    title = "GM-VAE (Gumbel-Softmax)"
    Options = GMVAEOptions
    size_option = "gmvae_clusters"

    def make(self, size):
        i, c, o = self.info, self.cfg, self.opts
        return GMVAE(i.kind, i.shape, c.latent, size, o.gumbel_tau_start, o.gumbel_tau_end, o.gumbel_anneal,
                     o.gumbel_anneal_steps, **self.common())
