"""Hierarchical VAE: a two-level ladder VAE (Sønderby et al., 2016) with a learned conditional prior.

The latent budget K is split into a bottom level z1 (K1 = K - K2 coordinates) and a top level z2
(K2 = `--hier-top`, default K // 2). Generative model:

    z2 ~ N(0, I),   z1 | z2 ~ N(mu_p(z2), diag(exp(logvar_p(z2)))),   x | z ~ decoder([z1, z2]),

where (mu_p, logvar_p) is the conditional prior network, an MLP K2 -> `--hier-hidden` -> 2 K1, and the
decoder is the same K-input decoder as every other model (it reads both levels, so the decoded latent
has K coordinates as in X-VAE). Inference is the ladder's: a bottom-up pass (the shared encoder body h,
then a deterministic layer d2 = relu(W h)) gives q(z2|x) from d2 and a bottom-up estimate
(mu_hat, logvar_hat) of z1 from h; the top-down pass merges that estimate with the conditional prior at
the sampled z2 by precision weighting,

    1/s1^2 = 1/s_hat^2 + 1/s_p^2,   mu1 = s1^2 (mu_hat / s_hat^2 + mu_p / s_p^2).

KL = KL(q(z2|x) || N(0, I)) + KL(q(z1|x, z2) || p(z1|z2)), both Gaussian and in closed form given the
sampled z2. The prior's trainable parameters are those of the conditional prior network.
"""
from __future__ import annotations

import dataclasses
from typing import Iterable, Optional, Sequence

import torch
from torch import nn

from .baseline import BaselineVAE, gaussian_kl_diag, reparameterize
from ..errors import ConfigError
from ..options import ModelOptions, option
from .protocol import ModelRecipe, register


class HierarchicalVAE(BaselineVAE):
    mode = "hierarchical"

    def __init__(self, kind: str, shape: Sequence[int], latent: int, top: int = None,
                 prior_hidden: int = 256, hidden: Sequence[int] = (128, 128), ops=None, likelihood=None):
        super().__init__(kind, shape, latent, hidden, ops, likelihood)
        top = max(1, latent // 2) if top is None else top
        if latent < 2 or not 1 <= top < latent:
            raise ValueError(f"the hierarchical VAE splits K = {latent} into a bottom level and a top "
                             f"level of 1..K-1 coordinates, got top = {top}")
        self.top, self.bottom = top, latent - top
        f = self.body.features
        self.q1_head = nn.Linear(f, 2 * self.bottom)           # bottom-up estimate of z1
        self.up = nn.Sequential(nn.Linear(f, prior_hidden), nn.ReLU())
        self.q2_head = nn.Linear(prior_hidden, 2 * top)         # q(z2 | x)
        self.prior_net = nn.Sequential(nn.Linear(top, prior_hidden), nn.ReLU(),
                                       nn.Linear(prior_hidden, 2 * self.bottom))  # p(z1 | z2)

    def prior_parameters(self) -> Iterable[nn.Parameter]:
        return self.prior_net.parameters()

    def conditional_prior(self, z2: torch.Tensor):
        """(mu_p, logvar_p) of p(z1 | z2), each (B, K1)."""
        mu_p, lv_p = self.prior_net(z2).float().chunk(2, dim=-1)
        return mu_p, lv_p

    def _bottom_up(self, x):
        h = self.body(x)
        mu_hat, lv_hat = self.q1_head(h).float().chunk(2, dim=-1)
        mu2, lv2 = self.q2_head(self.up(h)).float().chunk(2, dim=-1)
        return mu_hat, lv_hat, mu2, lv2

    @staticmethod
    def _merge(mu_hat, lv_hat, mu_p, lv_p):
        """Precision-weighted combination of the bottom-up estimate and the top-down prior."""
        w = torch.sigmoid(lv_p - lv_hat)                       # = prec_hat / (prec_hat + prec_p)
        return w * mu_hat + (1 - w) * mu_p, -torch.logaddexp(-lv_hat, -lv_p)

    def encode(self, x: torch.Tensor):
        """(None, mu, logvar) of q(z|x) over [z1, z2], with z2 at its posterior mean."""
        mu_hat, lv_hat, mu2, lv2 = self._bottom_up(x)
        mu1, lv1 = self._merge(mu_hat, lv_hat, *self.conditional_prior(mu2))
        return None, torch.cat([mu1, mu2], 1), torch.cat([lv1, lv2], 1)

    def _loss_terms(self, x, generator=None):
        mu_hat, lv_hat, mu2, lv2 = self._bottom_up(x)
        z2 = reparameterize(mu2, lv2, generator)
        mu_p, lv_p = self.conditional_prior(z2)
        mu1, lv1 = self._merge(mu_hat, lv_hat, mu_p, lv_p)
        z1 = reparameterize(mu1, lv1, generator)
        kl_top = gaussian_kl_diag(mu2, lv2, torch.zeros_like(mu2), torch.zeros_like(lv2))
        kl_bottom = gaussian_kl_diag(mu1, lv1, mu_p, lv_p)
        kl = (kl_top + kl_bottom).mean()
        z = torch.cat([z1, z2], 1)
        return (self.decoder(z), z, torch.cat([mu1, mu2], 1), torch.cat([lv1, lv2], 1), None,
                torch.zeros_like(kl), kl)

    def sample_latent(self, n: int, alpha: float = 1.0, generator=None) -> torch.Tensor:
        dev = self._device()
        z2 = alpha * torch.randn(n, self.top, device=dev, generator=generator)
        mu_p, lv_p = self.conditional_prior(z2)
        z1 = mu_p + alpha * torch.exp(0.5 * lv_p) * torch.randn(mu_p.shape, device=dev, generator=generator)
        return torch.cat([z1, z2], 1)


@dataclasses.dataclass
class HierarchicalOptions(ModelOptions):
    hier_top: Optional[int] = option(None, "size of the top latent level z2 (the bottom level gets the "
                                     "rest of K)", type="int", metavar="K2", minimum=1, default_text="K // 2")
    hier_hidden: int = option(256, "hidden width of the conditional prior p(z1|z2) and of the bottom-up "
                              "layer", metavar="H", minimum=1)

    def finish(self, cfg, kind):
        if cfg.latent < 2:
            raise ConfigError("--model hierarchical splits the latent into two levels and needs "
                              f"--latent >= 2, got {cfg.latent}")
        opts = self.replace(hier_top=max(1, cfg.latent // 2)) if self.hier_top is None else self
        if opts.hier_top >= cfg.latent:
            raise ConfigError(f"--hier-top must be smaller than the latent size {cfg.latent} (the rest "
                              f"is the bottom level), got {opts.hier_top}")
        return opts


@register
class HierarchicalRecipe(ModelRecipe):
    name = "hierarchical"
    title = "Hierarchical VAE"
    Options = HierarchicalOptions
    learned_prior = True

    def build(self):
        i, c, o = self.info, self.cfg, self.opts
        return {"ae": None, "vae": HierarchicalVAE(i.kind, i.shape, c.latent, o.hier_top, o.hier_hidden,
                                                   hidden=self.hidden, ops=self.ops,
                                                   likelihood=self.likelihood())}
