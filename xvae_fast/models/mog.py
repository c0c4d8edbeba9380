"""Standard mixture-of-Gaussians prior VAE: a learnable C-component diagonal Gaussian mixture prior

    p(z) = sum_c softmax(a)_c N(z; m_c, diag(exp(v_c))),

trained jointly with the encoder and decoder. The KL has no closed form; the loss uses the
single-sample Monte Carlo estimate log q(z|x) - log p(z) at the reparameterised z, with log p(z) from
the fused `mixture_log_prob` op. Sampling draws a component from the learned weights and z from its
Gaussian. The prior's trainable parameters are the logits a (C,), the means m (C, K) and the
log-variances v (C, K): C (2K + 1) (paper Table 4: 1.3k on MNIST with K = 64 and C = 10).
"""
from __future__ import annotations

import dataclasses
from typing import Iterable, Optional, Sequence, Tuple

import torch
from torch import nn

from .baseline import MixturePriorVAE, SizedPriorRecipe
from ..options import ModelOptions, option
from .protocol import register

# paper Table 4's prior counts (1.3k on MNIST, 5.1k on CelebA) are 10 components; 3 on the clusters;
# 64 on paper 001's 2-D benchmark (its MoG64, SPEC-related 1.2)
COMPONENTS = {"clusters": 3, "8gaussians": 64, "2spirals": 64, "checkerboard": 64, "rings": 64, "*": 10}


@dataclasses.dataclass
class MoGOptions(ModelOptions):
    mog_components: Optional[int] = option(None, "components of the learned mixture prior", type="int",
                                           metavar="C", minimum=1, per_dataset=COMPONENTS)


class MoGPriorVAE(MixturePriorVAE):
    mode = "mog"

    def __init__(self, kind: str, shape: Sequence[int], latent: int, components: int = 10,
                 hidden: Sequence[int] = (128, 128), ops=None, likelihood=None):
        super().__init__(kind, shape, latent, hidden, ops, likelihood)
        if components < 1:
            raise ValueError(f"the MoG prior needs at least one component, got {components}")
        # means spread like N(0, I) draws so the components start apart; unit variances, equal weights
        self.prior_logits = nn.Parameter(torch.zeros(components))
        self.prior_means = nn.Parameter(torch.randn(components, latent))
        self.prior_logvars = nn.Parameter(torch.zeros(components, latent))

    @property
    def num_components(self) -> int:
        return self.prior_logits.shape[0]

    def prior_parameters(self) -> Iterable[nn.Parameter]:
        return [self.prior_logits, self.prior_means, self.prior_logvars]

    def prior_components(self) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(log_weights (C,), means (C, K), log_vars (C, K)) of the learned mixture, float32."""
        return (torch.log_softmax(self.prior_logits.float(), 0), self.prior_means.float(),
                self.prior_logvars.float())


@register
class MoGRecipe(SizedPriorRecipe):
    name = "mog"
    title = "Standard MoG VAE"
    Options = MoGOptions
    size_option = "mog_components"

    def make(self, size):
        i = self.info
        return MoGPriorVAE(i.kind, i.shape, self.cfg.latent, size, **self.common())
