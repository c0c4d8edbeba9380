"""Stage 1: the deterministic autoencoder, trained with the run's likelihood (the paper: the squared
error summed per example)."""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import torch
from torch import nn

from .architectures import build_body, build_decoder
from .likelihood import Likelihood, SquaredError


class Autoencoder(nn.Module):
    def __init__(self, kind: str, shape: Sequence[int], latent: int, hidden: Sequence[int] = (128, 128),
                 likelihood: Optional[Likelihood] = None):
        super().__init__()
        self.kind, self.shape, self.latent = kind, tuple(shape), latent
        self.body = build_body(kind, shape, hidden)
        self.head = nn.Linear(self.body.features, latent)
        self.decoder = build_decoder(kind, latent, shape, hidden)
        self.likelihood = likelihood if likelihood is not None else SquaredError(kind)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x)).float()

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The data-space mean of p(x | z)."""
        return self.likelihood.mean(self.decoder(z))

    def forward(self, x: torch.Tensor):
        z = self.encode(x)
        return self.decode(z), z

    def loss(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        recon = self.likelihood.nll(self.decoder(self.encode(x)), x)
        return {"loss": recon, "recon": recon}
