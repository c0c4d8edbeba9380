"""The generative module's declared interface: what the trainer's outputs, `sample`, `evaluate`, the
trained-model API and the reference samplers use of a model (a recipe's `generative` module and its
`reference_models()`). Every generative module subclasses `GenerativeModule`, so its capabilities
are declared attributes, not probed with getattr/hasattr."""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
from torch import nn


class GenerativeModule(nn.Module):
    """Base of every generative module.

    Required: `likelihood` (models/likelihood.py), `forward(x, generator=None)` (a dict with at least
    "xhat", the reconstruction in the likelihood's parameters), `generate(n, alpha, routing,
    generator)` (n samples in data space; `alpha` scales the prior's spread) and `param_counts()`
    ({"total", "prior"}: trainable parameters, paper Table 4).

    Declared capabilities (class attributes or properties):
    - `routings`: the routings `generate` distinguishes (the mixture X-VAE and its ex-post reference:
      per-row and per-coordinate); () when it takes none. `routing` is its default.
    - `interpolates`: it has `interpolate(x1, x2, t)` (decoded latent interpolations), which
      `evaluate` scores (the interpolation FD).
    - a reference sampler (a recipe's `reference_models()`): `reference_title`, what it is in a line
      ("ex-post reference"), and `reference_label`, how it samples ("stage-1 AE + fitted prior"), for
      the run's figures, summary line and the evaluation reports.
    """
    routings: Tuple[str, ...] = ()
    routing: Optional[str] = None
    interpolates: bool = False
    reference_title: str = ""
    reference_label: str = ""

    def forward(self, x: torch.Tensor, generator=None) -> Dict[str, torch.Tensor]:
        raise NotImplementedError

    def generate(self, n: int, alpha: float = 1.0, routing: Optional[str] = None,
                 generator=None) -> torch.Tensor:
        raise NotImplementedError

    def param_counts(self) -> Dict[str, int]:
        raise NotImplementedError

    @property
    def reference_name(self) -> str:
        """A reference sampler's name in reports: its title and how it samples."""
        return f"{self.reference_title} ({self.reference_label})"

    @property
    def default_routing(self) -> str:
        """The routing of the model's own samples: its `routing`, per-row where it takes none."""
        return self.routing or "per-row"
