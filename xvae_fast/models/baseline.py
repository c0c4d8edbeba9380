"""What the paper's baselines share (docs/baselines.md): the X-VAE backbone (the same encoder body and
decoder, the same latent size K), the VAE interface the trainer, the outputs and the sampling CLI use,
and the trainable parameter count split into total and prior (paper Table 4).

Interface (the same as `VAE`):
- `encode(x)` -> (logits or None, mu, logvar): the posterior's parameters over the K decoded coordinates;
- `decode(z)`, `forward(x, generator=None)` -> {"xhat", "z", "mu", "logvar", "logits"};
- `loss(x, generator=None)` -> {"loss", "recon", "kl", "kl_cat", "kl_gauss"}: reconstruction (the
  negative log-likelihood of the run's `--likelihood`, summed per example) + KL, both averaged over the batch. `kl_cat` is the KL of a discrete latent
  (the GM-VAE's cluster variable; 0 for the continuous models), `kl_gauss` the rest;
- `generate(n, alpha, routing, generator)`: decoded samples of the model's own prior, with `alpha`
  scaling the prior's standard deviations as X-VAE does. A learned mixture prior is sampled jointly (one
  component per sample: the model's prior); `routing` is accepted for the common interface and checked,
  since per-coordinate routing is X-VAE's construct (paper Eqs. 20-21), not these models' prior;
- `param_counts()` -> {"total", "prior"}: trainable parameters, and those of the prior alone.
"""
from __future__ import annotations

import math
from typing import Dict, Iterable, Optional, Sequence, Tuple

import torch
from torch import nn

from ..ops.functional import ROUTINGS
from .architectures import build_body, build_decoder
from .generative import GenerativeModule
from .likelihood import Likelihood, SquaredError
from .ops import get_ops
from .protocol import ModelRecipe
from ..shard import randn_rows

LOG_2PI = math.log(2 * math.pi)


def log_normal(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; mu, diag(exp(logvar))) per row, summed over the last dimension."""
    return -0.5 * (LOG_2PI + logvar + (z - mu).pow(2) * torch.exp(-logvar)).sum(-1)


def gaussian_kl_diag(mu_q, logvar_q, mu_p, logvar_p) -> torch.Tensor:
    """KL(N(mu_q, exp(logvar_q)) || N(mu_p, exp(logvar_p))) per row, summed over the last dimension."""
    return 0.5 * (logvar_p - logvar_q + (torch.exp(logvar_q) + (mu_q - mu_p).pow(2))
                  * torch.exp(-logvar_p) - 1.0).sum(-1)


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, generator=None) -> torch.Tensor:
    eps = randn_rows(mu.shape, dtype=mu.dtype, device=mu.device, generator=generator)
    return mu + torch.exp(0.5 * logvar) * eps


def count(params: Iterable[nn.Parameter]) -> int:
    return int(sum(p.numel() for p in params if p.requires_grad))


def check_routing(routing: str) -> None:
    if routing not in ROUTINGS:
        raise ValueError(f"routing must be one of {ROUTINGS}, got {routing!r}")


class BaselineVAE(GenerativeModule):
    """Base of the baselines: the shared body and decoder and the common interface. Subclasses set
    `mode`, build their heads and prior, and implement `encode`, `_loss_terms`, `prior_parameters`
    and `sample_latent`."""

    mode = "baseline"
    requires_prior_fit = False     # the prior is learned (or fixed), never fitted on stage-1 latents

    def __init__(self, kind: str, shape: Sequence[int], latent: int, hidden: Sequence[int] = (128, 128),
                 ops=None, likelihood: Optional[Likelihood] = None):
        super().__init__()
        self.kind, self.shape, self.latent = kind, tuple(shape), latent
        self.plan = None
        self.prior = None          # no frozen MixturePrior: see prior_parameters()
        self.ops = ops if ops is not None else get_ops()
        self.body = build_body(kind, shape, hidden)
        self.decoder = build_decoder(kind, latent, shape, hidden)
        self.likelihood = likelihood if likelihood is not None else SquaredError(kind)

    # -- interface ------------------------------------------------------------------------------------
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The data-space mean of p(x | z)."""
        return self.likelihood.mean(self.decoder(z))

    def prior_parameters(self) -> Iterable[nn.Parameter]:
        return []

    def param_counts(self) -> Dict[str, int]:
        """Trainable parameters of the generative model (paper Table 4) and of its prior alone."""
        return {"total": count(self.parameters()), "prior": count(self.prior_parameters())}

    def set_step(self, step: int) -> None:
        """Called by the trainer with the global optimizer step before each step (schedules)."""

    def set_total_steps(self, total: int) -> None:
        """Called by the trainer with the number of training steps of the run (schedules)."""

    def _loss_terms(self, x: torch.Tensor, generator=None):
        """(decoder output h (raw, before the likelihood's mean), z, mu, logvar, logits, kl_cat,
        kl_gauss) for a batch."""
        raise NotImplementedError

    def sample_latent(self, n: int, alpha: float = 1.0, generator=None) -> torch.Tensor:
        """n latent codes (n, K) from the model's prior, standard deviations scaled by alpha."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor, generator=None) -> Dict[str, torch.Tensor]:
        h, z, mu, logvar, logits, _, _ = self._loss_terms(x, generator)
        return {"xhat": self.likelihood.mean(h), "z": z, "mu": mu, "logvar": logvar, "logits": logits}

    def loss(self, x: torch.Tensor, generator=None) -> Dict[str, torch.Tensor]:
        h, _, _, _, _, kl_cat, kl_gauss = self._loss_terms(x, generator)
        recon = self.likelihood.nll(h, x)
        kl = kl_cat + kl_gauss
        return {"loss": recon + kl, "recon": recon, "kl": kl, "kl_cat": kl_cat, "kl_gauss": kl_gauss}

    @torch.no_grad()
    def generate(self, n: int, alpha: float = 1.0, routing: Optional[str] = None,
                 generator=None) -> torch.Tensor:
        """n decoded samples of the model's own prior (alpha scales its standard deviations); a
        learned mixture is always sampled jointly, whatever `routing` says."""
        if routing is not None:
            check_routing(routing)
        z = self.sample_latent(n, alpha, generator)
        return self.decode(z.float()).float()

    def _device(self) -> torch.device:
        return next(self.parameters()).device


def uniform_log_weights(C: int, like: torch.Tensor) -> torch.Tensor:
    """log(1/C) for C components, normalised exactly (logsumexp 0) in the dtype of `like`."""
    return torch.log_softmax(torch.zeros(C, dtype=like.dtype, device=like.device), 0)


def sample_diag_mixture(ops, weights: torch.Tensor, means: torch.Tensor, stds: torch.Tensor, n: int,
                        alpha: float, generator=None) -> torch.Tensor:
    """n draws of the diagonal Gaussian mixture (one component per row, stds scaled by alpha), through
    the ops' `sample_prior` on a frozen snapshot of the mixture."""
    from ..ops.prior import MixturePrior
    prior = MixturePrior(weights.detach().float(), means.detach().float(), stds.detach().float())
    return ops.sample_prior(prior, n, alpha, "per-row", generator=generator)


class MixturePriorVAE(BaselineVAE):
    """A Gaussian encoder q(z|x) = N(mu, diag(exp(logvar))) with a diagonal Gaussian mixture prior
    (the VampPrior and the MoG prior). Subclasses give the mixture by `prior_components()`; the KL is
    the single-sample Monte Carlo estimate log q(z|x) - log p(z) at the reparameterised z, with
    log p(z) from the fused `mixture_log_prob`, and sampling draws one component per row."""

    def __init__(self, kind: str, shape: Sequence[int], latent: int, hidden: Sequence[int] = (128, 128),
                 ops=None, likelihood: Optional[Likelihood] = None):
        super().__init__(kind, shape, latent, hidden, ops, likelihood)
        f = self.body.features
        self.mu_head = nn.Linear(f, latent)
        self.logvar_head = nn.Linear(f, latent)

    def encode(self, x: torch.Tensor):
        h = self.body(x)
        return None, self.mu_head(h).float(), self.logvar_head(h).float()

    def prior_components(self) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(log_weights (C,), means (C, K), log_vars (C, K)) of the prior mixture."""
        raise NotImplementedError

    def log_prior(self, z: torch.Tensor) -> torch.Tensor:
        lw, m, lv = self.prior_components()
        return self.ops.mixture_log_prob(z, lw, m, lv)

    def _loss_terms(self, x, generator=None):
        _, mu, logvar = self.encode(x)
        z = reparameterize(mu, logvar, generator)
        kl = (log_normal(z, mu, logvar) - self.log_prior(z)).mean()
        return self.decoder(z), z, mu, logvar, None, torch.zeros_like(kl), kl

    def sample_latent(self, n: int, alpha: float = 1.0, generator=None) -> torch.Tensor:
        lw, m, lv = self.prior_components()
        return sample_diag_mixture(self.ops, lw.exp(), m, torch.exp(0.5 * lv), n, alpha, generator)


class SizedPriorRecipe(ModelRecipe):
    """Recipe of a learned-prior baseline with one size option (`size_option`, e.g. the number of
    pseudo-inputs, declared in its Options with its per-dataset defaults); `make(size)` builds the model."""
    size_option = ""
    learned_prior = True

    def make(self, size: int) -> BaselineVAE:
        raise NotImplementedError

    def build(self):
        return {"ae": None, "vae": self.make(getattr(self.opts, self.size_option))}

    def common(self) -> Dict:
        return dict(hidden=self.hidden, ops=self.ops, likelihood=self.likelihood())
