"""The ex-post density-estimation reference: the stage-1 autoencoder decoding samples of the prior
fitted on its latents, with no stage-2 VAE at all. Every two-stage method (X-VAE, Two-Stage VAE, ...)
must beat it, since improving on it is what the second stage is for. `compare` and `evaluate` report
it beside the models; it has the interface `evaluate` uses (forward -> {"xhat"}, generate)."""
from __future__ import annotations

from typing import Dict, Optional

import torch
from torch import nn

from ..ops.functional import ROUTINGS
from ..ops.prior import MixturePrior
from .ops import get_ops
from .generative import GenerativeModule



class ExPostModel(GenerativeModule):
    mode = "expost"
    reference_title = "ex-post reference"
    reference_label = "stage-1 AE + fitted prior"

    @property
    def routings(self):
        return ROUTINGS if self.prior.num_components > 1 else ()

    def __init__(self, ae: nn.Module, prior: MixturePrior, routing: str = "per-row", ops=None):
        super().__init__()
        if routing not in ROUTINGS:
            raise ValueError(f"routing must be one of {ROUTINGS}, got {routing!r}")
        self.ae = ae
        self.prior = prior
        self.routing = routing
        self.ops = ops if ops is not None else get_ops()
        self.kind, self.shape, self.latent = ae.kind, ae.shape, ae.latent

    def forward(self, x: torch.Tensor, generator=None) -> Dict[str, torch.Tensor]:
        xhat, z = self.ae(x)
        return {"xhat": xhat, "z": z, "mu": z, "logvar": None, "logits": None}

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.ae.decode(z)

    def param_counts(self) -> Dict[str, int]:
        total = sum(p.numel() for p in self.ae.parameters() if p.requires_grad)
        return {"total": int(total), "prior": 0}

    @torch.no_grad()
    def generate(self, n: int, alpha: float = 1.0, routing: Optional[str] = None,
                 generator=None) -> torch.Tensor:
        """n decoded prior samples: z from the fitted prior (per-row: exact GMM sampling), decoded by
        the stage-1 decoder."""
        routing = self.routing if routing is None else routing
        if routing not in ROUTINGS:
            raise ValueError(f"routing must be one of {ROUTINGS}, got {routing!r}")
        z = self.ops.sample_prior(self.prior, n, alpha, routing, generator=generator)
        return self.ae.decode(z.float()).float()
