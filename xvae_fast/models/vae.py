"""Stage 2: the VAE with a frozen prior.

Modes:
- `mixture` (X-VAE with a routed-transport plan): the encoder emits logits l, mean mu and log-variance
  logvar (B, K); pi_q = responsibilities(l); z = routed_transport(mu, logvar, prior, plan,
  pi_q=pi_q.detach()); KL = mixture_kl(l, mu, logvar, prior) (categorical + Gaussian parts).
- `single` (single-Gaussian X-VAE): z = mu + sigma * eps, KL = gaussian_kl(mu, logvar, mu_AE, sigma_AE).
- `standard`: the same with the N(0, I) prior (the standard VAE baseline; no stage 1).
The loss is reconstruction (squared error summed per example) + KL (summed over coordinates), both
averaged over the batch: the paper's per-example objective.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import torch
from torch import nn

from ..plans import Plan
from ..prior import MixturePrior
from .architectures import build_body, build_decoder
from .autoencoder import recon_loss
from .ops import get_ops

MODES = ("mixture", "single", "standard")


class VAE(nn.Module):
    def __init__(self, kind: str, shape: Sequence[int], latent: int, mode: str,
                 plan: Optional[Plan] = None, hidden: Sequence[int] = (128, 128), ops=None):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"VAE mode must be one of {MODES}, got {mode!r}")
        if mode == "mixture":
            if plan is None:
                raise ValueError("a mixture X-VAE needs a routed-transport plan")
            if len(plan) != latent:
                raise ValueError(f"the plan has {len(plan)} coordinates but the latent size is {latent}")
        self.kind, self.shape, self.latent, self.mode, self.plan = kind, tuple(shape), latent, mode, plan
        self.ops = ops if ops is not None else get_ops()
        self.body = build_body(kind, shape, hidden)
        f = self.body.features
        self.mu_head = nn.Linear(f, latent)
        self.logvar_head = nn.Linear(f, latent)
        self.logits_head = nn.Linear(f, latent) if mode == "mixture" else None
        self.decoder = build_decoder(kind, latent, shape, hidden)
        self.prior: Optional[MixturePrior] = None
        if mode == "standard":
            self.set_prior(MixturePrior.single(torch.zeros(latent), torch.ones(latent)))

    @property
    def requires_prior_fit(self) -> bool:
        """X-VAE's prior is fitted on the stage-1 latents; the standard VAE's N(0, I) is built in."""
        return self.mode != "standard"

    def param_counts(self) -> Dict[str, int]:
        """Trainable parameters (paper Table 4): the prior is a frozen buffer, so it counts 0."""
        total = sum(p.numel() for p in self.parameters() if p.requires_grad)
        return {"total": int(total), "prior": 0}

    # -- prior --------------------------------------------------------------------------------------
    def set_prior(self, prior: MixturePrior) -> None:
        if prior.latent_dim != self.latent:
            raise ValueError(f"latent size mismatch between stages: the prior is over K = "
                             f"{prior.latent_dim} coordinates but the VAE's latent size is {self.latent}")
        if self.mode == "mixture" and prior.num_components != self.latent:
            raise ValueError(f"the routed-transport X-VAE needs a C = K mixture prior, got C = "
                             f"{prior.num_components} components for K = {self.latent}")
        if self.mode != "mixture" and not prior.is_single:
            raise ValueError(f"the {self.mode} VAE needs a single-Gaussian prior, got C = "
                             f"{prior.num_components} components")
        device = next(self.parameters()).device
        self.prior = prior.to(device)

    def _require_prior(self) -> MixturePrior:
        if self.prior is None:
            raise RuntimeError("the VAE has no prior yet: fit one on the stage-1 latents and call "
                               "set_prior()")
        return self.prior

    # -- forward ------------------------------------------------------------------------------------
    def encode(self, x: torch.Tensor):
        h = self.body(x)
        logits = self.logits_head(h).float() if self.logits_head is not None else None
        return logits, self.mu_head(h).float(), self.logvar_head(h).float()

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def latent_code(self, logits, mu, logvar, generator=None) -> torch.Tensor:
        prior = self._require_prior()
        if self.mode == "mixture":
            pi_q = self.ops.responsibilities(logits)
            return self.ops.routed_transport(mu, logvar, prior, self.plan, pi_q=pi_q.detach(),
                                             generator=generator)
        eps = torch.randn(mu.shape, dtype=mu.dtype, device=mu.device, generator=generator)
        return mu + torch.exp(0.5 * logvar) * eps

    def kl_terms(self, logits, mu, logvar):
        """(total, categorical, gaussian) KL, each summed over coordinates and averaged over rows."""
        prior = self._require_prior()
        if self.mode == "mixture":
            return self.ops.mixture_kl(logits, mu, logvar, prior, reduction="mean")
        kl = self.ops.gaussian_kl(mu, logvar, prior.means[0], prior.stds[0], reduction="mean")
        return kl, torch.zeros_like(kl), kl

    def forward(self, x: torch.Tensor, generator=None) -> Dict[str, torch.Tensor]:
        logits, mu, logvar = self.encode(x)
        z = self.latent_code(logits, mu, logvar, generator)
        return {"xhat": self.decode(z), "z": z, "mu": mu, "logvar": logvar, "logits": logits}

    def loss(self, x: torch.Tensor, generator=None) -> Dict[str, torch.Tensor]:
        logits, mu, logvar = self.encode(x)
        kl, kl_cat, kl_gauss = self.kl_terms(logits, mu, logvar)
        z = self.latent_code(logits, mu, logvar, generator)
        recon = recon_loss(self.decode(z), x)
        return {"loss": recon + kl, "recon": recon, "kl": kl, "kl_cat": kl_cat, "kl_gauss": kl_gauss}

    @torch.no_grad()
    def generate(self, n: int, alpha: float = 1.0, routing: str = "per-coordinate",
                 generator=None) -> torch.Tensor:
        """n decoded samples: z from the prior (Eqs. 20-21, `alpha` scales the stds), then decoded."""
        z = self.ops.sample_prior(self._require_prior(), n, alpha, routing, generator=generator)
        return self.decode(z.float()).float()
