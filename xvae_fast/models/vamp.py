"""VampPrior VAE (Tomczak and Welling, 2018): the prior is the mixture of the encoder's own posteriors at
C learned pseudo-inputs u_1..u_C,

    p(z) = 1/C sum_c q(z | u_c),

so it is re-evaluated with the current encoder at every step. Its KL has no closed form: the loss uses
the single-sample Monte Carlo estimate log q(z|x) - log p(z) at the reparameterised z, with log p(z)
from the fused `mixture_log_prob` op (C = number of pseudo-inputs). Sampling draws a pseudo-input
component uniformly and z from that component's posterior Gaussian (the model's own prior, not
N(0, I)).

Pseudo-inputs have the data's shape. As in the authors' code, images keep them in [0, 1] (a hardtanh
of the raw parameters, initialised N(0.05, 0.01)); vector data use them unconstrained, initialised
N(0, 1). Their count is `--pseudo-inputs` (paper Table 5: 200 for MNIST, 32 for CelebA). They are the
prior's trainable parameters: C x (input size).
"""
from __future__ import annotations

import dataclasses
from typing import Iterable, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .baseline import MixturePriorVAE, SizedPriorRecipe, uniform_log_weights
from ..options import ModelOptions, option
from .protocol import register

# paper Table 5: MNIST 200, CelebA 32; the bundled digits (1437 images) 50, the 2-D clusters 10;
# paper 001's 2-D benchmark 64 (its VampPrior warm-up, SPEC-related 1.2)
PSEUDO_INPUTS = {"digits": 50, "clusters": 10, "mnist": 200, "celeba": 32, "images": 32, "npy": 50,
                 "8gaussians": 64, "2spirals": 64, "checkerboard": 64, "rings": 64}


@dataclasses.dataclass
class VampOptions(ModelOptions):
    pseudo_inputs: Optional[int] = option(None, "learned pseudo-inputs (paper Table 5: mnist 200, celeba 32)",
                                          type="int", metavar="C", minimum=1, per_dataset=PSEUDO_INPUTS)


class VampPriorVAE(MixturePriorVAE):
    mode = "vamp"

    def __init__(self, kind: str, shape: Sequence[int], latent: int, pseudo_inputs: int = 200,
                 hidden: Sequence[int] = (128, 128), ops=None, likelihood=None):
        super().__init__(kind, shape, latent, hidden, ops, likelihood)
        if pseudo_inputs < 1:
            raise ValueError(f"the VampPrior needs at least one pseudo-input, got {pseudo_inputs}")
        u = torch.empty(pseudo_inputs, *self.shape)
        if kind == "image":
            nn.init.normal_(u, 0.05, 0.01)
        else:
            nn.init.normal_(u, 0.0, 1.0)
        self.pseudo = nn.Parameter(u)

    @property
    def num_pseudo_inputs(self) -> int:
        return self.pseudo.shape[0]

    def pseudo_inputs(self) -> torch.Tensor:
        """The pseudo-inputs in data space (images clamped to [0, 1])."""
        return F.hardtanh(self.pseudo, 0.0, 1.0) if self.kind == "image" else self.pseudo

    def prior_parameters(self) -> Iterable[nn.Parameter]:
        return [self.pseudo]

    def prior_components(self) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(log_weights (C,), means (C, K), log_vars (C, K)): the posteriors at the pseudo-inputs."""
        _, m, lv = self.encode(self.pseudo_inputs())
        return uniform_log_weights(m.shape[0], m), m, lv


@register
class VampRecipe(SizedPriorRecipe):
    name = "vamp"
    title = "VampPrior VAE"
    Options = VampOptions
    size_option = "pseudo_inputs"

    def make(self, size):
        i = self.info
        return VampPriorVAE(i.kind, i.shape, self.cfg.latent, size, **self.common())
