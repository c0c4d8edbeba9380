"""Stage 1: the deterministic autoencoder (MSE with sum reduction)."""
from __future__ import annotations

from typing import Dict, Sequence

import torch
from torch import nn

from .architectures import build_body, build_decoder


def recon_loss(xhat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Squared error summed over an example's entries, averaged over the batch (MSE, sum
    reduction, per example: the paper's reconstruction term)."""
    return (xhat.float() - x.float()).pow(2).flatten(1).sum(1).mean()


class Autoencoder(nn.Module):
    def __init__(self, kind: str, shape: Sequence[int], latent: int, hidden: Sequence[int] = (128, 128)):
        super().__init__()
        self.kind, self.shape, self.latent = kind, tuple(shape), latent
        self.body = build_body(kind, shape, hidden)
        self.head = nn.Linear(self.body.features, latent)
        self.decoder = build_decoder(kind, latent, shape, hidden)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x)).float()

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def forward(self, x: torch.Tensor):
        z = self.encode(x)
        return self.decode(z), z

    def loss(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        xhat, _ = self(x)
        recon = recon_loss(xhat, x)
        return {"loss": recon, "recon": recon}
