"""Stage 2: the VAE with a frozen prior.

Modes:
- `mixture` (X-VAE with a routed-transport plan over the C = K mixture prior fitted on the stage-1
  latents). The KL objective is `kl` (SPEC Revision 2):
  - `paper`: Eq. 18, `mixture_kl(l, mu, logvar, prior)`: KL(pi_q || pi_p) + sum_k pi_q[k] KLN[i,k] with
    the batch responsibilities pi_q of the logits head.
  - `tight`: `mixture_bound(kind="tight")`: -log sum_c pi_p[c] exp(-KL(q_i || p_c)), Lemma 1 at its
    optimal per-row weights r*; no logits head.
  - `mixture`: `mixture_bound(kind="mixture")`: Lemma 1 with the logits head's per-row weights r.
  z = routed_transport(mu, logvar, prior, plan, pi_q): plans that route by pi_q use the batch mean of
  the per-row weights the KL uses (softplus responsibilities of the logits for `paper` and `mixture`,
  the optimal weights r* for `tight`), detached.
- `single` (single-Gaussian X-VAE): z = mu + sigma * eps, KL = gaussian_kl(mu, logvar, mu_AE, sigma_AE).
- `standard`: the same with the N(0, I) prior (the standard VAE baseline; no stage 1).
The loss is the likelihood's negative log-likelihood (summed per example) + KL (summed over
coordinates), both averaged over the batch: the paper's per-example objective.

`init_from_autoencoder(ae)` is SPEC Revision 2's stage-2 initialisation (`--stage2-init ae`).
"""
from __future__ import annotations

import dataclasses
from typing import Dict, Optional, Sequence

import torch
from torch import nn

from ..ops.functional import ROUTINGS
from ..options import ModelOptions, option
from ..ops.plans import Plan
from ..ops.prior import MixturePrior
from .architectures import build_body, build_decoder
from .generative import GenerativeModule
from .likelihood import Likelihood, SquaredError
from .ops import get_ops
from .protocol import ModelRecipe, register
from ..shard import gather_rows, global_term, local_rows

MODES = ("mixture", "single", "standard")
KL_OBJECTIVES = ("paper", "tight", "mixture")


class VAE(GenerativeModule):
    def __init__(self, kind: str, shape: Sequence[int], latent: int, mode: str,
                 plan: Optional[Plan] = None, hidden: Sequence[int] = (128, 128), ops=None,
                 kl: str = "paper", likelihood: Optional[Likelihood] = None,
                 routing: str = "per-coordinate", kl_weight: float = 1.0):
        super().__init__()
        if not 0 < kl_weight < float("inf"):
            raise ValueError(f"kl_weight must be positive, got {kl_weight!r}")
        if mode not in MODES:
            raise ValueError(f"VAE mode must be one of {MODES}, got {mode!r}")
        if mode == "mixture":
            if plan is None:
                raise ValueError("a mixture X-VAE needs a routed-transport plan")
            if len(plan) != latent:
                raise ValueError(f"the plan has {len(plan)} coordinates but the latent size is {latent}")
            if kl not in KL_OBJECTIVES:
                raise ValueError(f"kl must be one of {KL_OBJECTIVES}, got {kl!r}")
        if routing not in ROUTINGS:
            raise ValueError(f"routing must be one of {ROUTINGS}, got {routing!r}")
        self.kind, self.shape, self.latent, self.mode, self.plan = kind, tuple(shape), latent, mode, plan
        self.kl = kl if mode == "mixture" else None
        self.routing = routing
        self.kl_weight = float(kl_weight)
        self.ops = ops if ops is not None else get_ops()
        self.body = build_body(kind, shape, hidden)
        f = self.body.features
        self.mu_head = nn.Linear(f, latent)
        self.logvar_head = nn.Linear(f, latent)
        # the logits head gives the per-row component weights of the `paper` and `mixture` KLs
        self.logits_head = nn.Linear(f, latent) if self.kl in ("paper", "mixture") else None
        self.decoder = build_decoder(kind, latent, shape, hidden)
        self.likelihood = likelihood if likelihood is not None else SquaredError(kind)
        self.prior: Optional[MixturePrior] = None
        if mode == "standard":
            self.set_prior(MixturePrior.single(torch.zeros(latent), torch.ones(latent)))

    @property
    def routings(self):
        """The mixture X-VAE's generation routes its C > 1 components per row or per coordinate."""
        prior = self.prior
        return ROUTINGS if self.mode == "mixture" and prior is not None and prior.num_components > 1 else ()

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

    @torch.no_grad()
    def init_from_autoencoder(self, ae: nn.Module) -> None:
        """Stage-2 initialisation from the stage-1 autoencoder (SPEC Revision 2): its encoder body, its
        latent layer (as the mean head), its decoder and likelihood are copied; the log-variance head
        starts at weight 0 with the bias log sum_c pi_c S[c,k]^2 (the prior's mean within-component
        variance of coordinate k), so every posterior starts as wide as a prior component; the logits
        head (if any) keeps its fresh initialisation."""
        prior = self._require_prior()
        self.body.load_state_dict(ae.body.state_dict())
        self.mu_head.load_state_dict(ae.head.state_dict())
        self.decoder.load_state_dict(ae.decoder.state_dict())
        self.likelihood.load_state_dict(ae.likelihood.state_dict())
        w, S = prior.weights.double(), prior.stds.double()
        var = (w[:, None] * S * S).sum(0)
        self.logvar_head.weight.zero_()
        self.logvar_head.bias.copy_(torch.log(var).to(self.logvar_head.bias))

    # -- forward ------------------------------------------------------------------------------------
    def encode(self, x: torch.Tensor):
        h = self.body(x)
        logits = self.logits_head(h).float() if self.logits_head is not None else None
        return logits, self.mu_head(h).float(), self.logvar_head(h).float()

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The data-space mean of p(x | z)."""
        return self.likelihood.mean(self.decoder(z))

    def kl_terms(self, logits, mu, logvar):
        """(total, categorical, gaussian, pi_q): the KL parts, each summed over coordinates and averaged
        over rows, and the routing distribution pi_q (K,) (detached; None when the plan needs none)."""
        prior = self._require_prior()
        if self.mode != "mixture":
            kl = self.ops.gaussian_kl(mu, logvar, prior.means[0], prior.stds[0], reduction="mean")
            return kl, torch.zeros_like(kl), kl, None
        need = self.plan.needs_pi_q
        if self.kl == "paper":
            total, cat, gauss = self.ops.mixture_kl(logits, mu, logvar, prior, reduction="mean")
            pi_q = self.ops.responsibilities(logits).detach() if need else None
        elif self.kl == "mixture":
            total, cat, gauss = self.ops.mixture_bound(mu, logvar, prior, "mixture", logits, "mean")
            pi_q = self.ops.responsibilities(logits).detach() if need else None
        else:
            out = self.ops.mixture_bound(mu, logvar, prior, "tight", None, "mean", return_weights=need)
            total, cat, gauss = out[:3]
            pi_q = out[3].float().mean(0) if need else None
        return total, cat, gauss, pi_q

    def latent_code(self, mu, logvar, pi_q=None, generator=None) -> torch.Tensor:
        prior = self._require_prior()
        if self.mode == "mixture":
            return self.ops.routed_transport(mu, logvar, prior, self.plan, pi_q=pi_q, generator=generator)
        eps = torch.randn(mu.shape, dtype=mu.dtype, device=mu.device, generator=generator)
        return mu + torch.exp(0.5 * logvar) * eps

    def forward(self, x: torch.Tensor, generator=None) -> Dict[str, torch.Tensor]:
        logits, mu, logvar = self.encode(x)
        pi_q = None
        if self.mode == "mixture" and self.plan.needs_pi_q:
            pi_q = self.kl_terms(logits, mu, logvar)[3]
        z = self.latent_code(mu, logvar, pi_q, generator)
        return {"xhat": self.decode(z), "z": z, "mu": mu, "logvar": logvar, "logits": logits}

    def loss(self, x: torch.Tensor, generator=None) -> Dict[str, torch.Tensor]:
        logits, mu, logvar = self.encode(x)
        # under data-parallel training the KL and the latent draw see the whole global batch (pi_q
        # couples its rows; the fused transport draws its noise inside the kernel): xvae_fast/shard.py
        logits, mu, logvar = gather_rows(logits, mu, logvar)
        kl, kl_cat, kl_gauss, pi_q = self.kl_terms(logits, mu, logvar)
        kl, kl_cat, kl_gauss = global_term(kl), global_term(kl_cat), global_term(kl_gauss)
        z = local_rows(self.latent_code(mu, logvar, pi_q, generator))
        recon = self.likelihood.nll(self.decoder(z), x)
        out = {"loss": recon + kl, "recon": recon, "kl": kl, "kl_cat": kl_cat, "kl_gauss": kl_gauss}
        if self.kl_weight != 1.0:
            # beta-weighted training loss; "loss" stays the negative ELBO that every run reports
            out["objective"] = recon + self.kl_weight * kl
        return out

    @torch.no_grad()
    def generate(self, n: int, alpha: float = 1.0, routing: Optional[str] = None,
                 generator=None) -> torch.Tensor:
        """n decoded samples: z from the prior (`per-row`: one component per sample, exact sampling of
        the fitted mixture; `per-coordinate`: the paper's Eq. 20; default: the run's --routing), `alpha`
        scaling the stds, then decoded to the data-space mean."""
        routing = self.routing if routing is None else routing
        if routing not in ROUTINGS:
            raise ValueError(f"routing must be one of {ROUTINGS}, got {routing!r}")
        z = self.ops.sample_prior(self._require_prior(), n, alpha, routing, generator=generator)
        return self.decode(z.float()).float()


@dataclasses.dataclass
class KLWeightOption(ModelOptions):
    """The KL's weight in the trained loss of the models whose loss is the likelihood plus a KL."""
    kl_weight: Optional[float] = option(
        None, "beta, the KL's weight in the trained loss (1: the ELBO; the reported objective is always "
        "the ELBO)", type="float", metavar="BETA", above=0, default_text="1")


@dataclasses.dataclass
class StandardVAEOptions(KLWeightOption):
    def finish(self, cfg, kind):
        return self.replace(kl_weight=1.0 if self.kl_weight is None else float(self.kl_weight))


@register
class StandardVAERecipe(ModelRecipe):
    """`--model vae`: the standard VAE with the N(0, I) prior, trained end to end (no stage 1)."""
    name = "vae"
    title = "standard VAE (N(0, I) prior)"
    Options = StandardVAEOptions

    def build(self):
        i, c = self.info, self.cfg
        return {"ae": None, "vae": VAE(i.kind, i.shape, c.latent, "standard", None, hidden=self.hidden,
                                       kl_weight=self.opts.kl_weight, ops=self.ops,
                                       likelihood=self.likelihood(), routing="per-row")}

    def summary(self):
        return {"kl_weight": self.opts.kl_weight}
