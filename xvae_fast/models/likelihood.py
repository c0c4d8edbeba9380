"""Decoder likelihoods p(x | z), shared by the stage-1 autoencoder, X-VAE and every baseline
(`--likelihood`, SPEC Revision 2).

A decoder emits a raw output h per example; the likelihood turns it into the data-space mean
(`mean(h)`) and into the per-example negative log-likelihood (`nll(h, x)`, summed over the example's
entries, averaged over the batch):

- `mse` (the paper): the squared error sum_p (x_p - f_p)^2, f = mean(h). Its units are squared data
  units, not nats.
- `bernoulli`: the binary cross-entropy sum_p -[x_p log f_p + (1 - x_p) log(1 - f_p)] with
  f = sigmoid(h), computed from the logits h (stable); the data must lie in [0, 1]. Nats.
- `gaussian`: N(x; f, gamma I) with one learned scalar variance gamma = g^2 (Two-Stage VAE; the
  parameter is the log standard deviation `log_gamma_std`, as in the authors' code, initialised at 0):
  sum_p (x_p - f_p)^2 / (2 g^2) + D log g + (D/2) log(2 pi). Nats. An optional floor `gamma_min`
  keeps gamma >= gamma_min (the gradient of log g stops while it binds; `floor_binds()` tells).

For `mse` and `gaussian` on images the mean is h itself (`output="linear"`) or sigmoid(h)
(`output="sigmoid"`, `--image-output`); on vectors it is h. For `bernoulli` it is always sigmoid(h).
A squared error through a sigmoid has a vanishing gradient 2 (f - x) f (1 - f) once f saturates: on
MNIST, Adam's first steps push every pixel towards black, the sigmoid saturates within ~10 steps and
the autoencoder never trains again (10 of 20 seeds at the paper's setup, seed 42 among them;
docs/choosing-defaults.md). The linear mean, the Gaussian likelihood that a summed squared error
stands for, has the gradient 2 (h - x), which never vanishes, so `mse` uses it by default. Generation decodes to the mean; `draw(mean)` adds the decoder
noise (x ~ p(x | z): Bernoulli draws, or the Gaussian's noise, variance gamma, or 1/2 for `mse`), which
matters where the model explains spread by that noise (the clusters, docs/choosing-defaults.md).
"""
from __future__ import annotations

import math
from typing import Dict, Optional

import torch
from torch import nn
from torch.nn import functional as F

LIKELIHOODS = ("mse", "bernoulli", "gaussian")
IMAGE_OUTPUTS = ("linear", "sigmoid")
UNITS = {"mse": "squared error (sum over an example's entries)",
         "bernoulli": "nats (binary cross-entropy summed over an example's entries)",
         "gaussian": "nats (Gaussian negative log-likelihood with the learned variance)"}
LOG_2PI = math.log(2 * math.pi)


class Likelihood(nn.Module):
    name = "base"

    def __init__(self, kind: str, output: str = "sigmoid"):
        super().__init__()
        if output not in IMAGE_OUTPUTS:
            raise ValueError(f"output must be one of {IMAGE_OUTPUTS}, got {output!r}")
        self.kind = kind  # 'image' or 'vector'
        self.output = output  # images: how the raw output becomes the pixel mean

    @property
    def units(self) -> str:
        return UNITS[self.name]

    def mean(self, h: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(h) if self.kind == "image" and self.output == "sigmoid" else h

    def nll_rows(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Per-example negative log-likelihood (B,), float32 (or float64 for float64 data)."""
        raise NotImplementedError

    def nll(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.nll_rows(h, x).mean()

    def stats(self) -> Dict[str, float]:
        """Scalars worth logging per epoch (the learned variance)."""
        return {}

    def draw(self, mean: torch.Tensor, generator=None) -> torch.Tensor:
        """x ~ p(x | z) given the decoded mean: the decoder noise that generation usually leaves out
        (`--decoder-noise`)."""
        raise NotImplementedError


def _acc(h: torch.Tensor, x: torch.Tensor):
    dt = torch.float64 if torch.float64 in (h.dtype, x.dtype) else torch.float32
    return h.to(dt), x.to(dt)


class SquaredError(Likelihood):
    name = "mse"

    def nll_rows(self, h, x):
        h, x = _acc(h, x)
        return (self.mean(h) - x).pow(2).flatten(1).sum(1)

    def draw(self, mean, generator=None):
        # the summed squared error is the Gaussian log-density with variance 1/2, up to a constant
        return mean + math.sqrt(0.5) * _normal_like(mean, generator)


def _normal_like(mean: torch.Tensor, generator) -> torch.Tensor:
    return torch.randn(mean.shape, dtype=mean.dtype, device=mean.device, generator=generator)


class Bernoulli(Likelihood):
    name = "bernoulli"

    def draw(self, mean, generator=None):
        return torch.bernoulli(mean.clamp(0, 1), generator=generator)

    def mean(self, h):
        return torch.sigmoid(h)

    def nll_rows(self, h, x):
        h, x = _acc(h, x)
        return F.binary_cross_entropy_with_logits(h, x, reduction="none").flatten(1).sum(1)


class LearnedGaussian(Likelihood):
    name = "gaussian"

    def __init__(self, kind: str, gamma_min: float = 0.0, output: str = "sigmoid"):
        super().__init__(kind, output)
        self.log_gamma_std = nn.Parameter(torch.zeros(()))
        self.gamma_min = float(gamma_min)

    def log_std(self) -> torch.Tensor:
        """log g, clamped at the floor 0.5 log gamma_min when one is set."""
        lg = self.log_gamma_std.float()
        if self.gamma_min > 0:
            lg = lg.clamp_min(0.5 * math.log(self.gamma_min))
        return lg

    def nll_rows(self, h, x):
        h, x = _acc(h, x)
        lg = self.log_std().to(h.dtype)
        sq = (self.mean(h) - x).pow(2).flatten(1)
        d = sq.shape[1]
        return sq.sum(1) * (0.5 * torch.exp(-2 * lg)) + d * (lg + 0.5 * LOG_2PI)

    def draw(self, mean, generator=None):
        return mean + torch.exp(self.log_std().detach()).to(mean.dtype) * _normal_like(mean, generator)

    @property
    def gamma(self) -> float:
        return float(torch.exp(2 * self.log_std()).detach())

    def floor_binds(self) -> bool:
        return self.gamma_min > 0 and float(self.log_gamma_std.detach()) < 0.5 * math.log(self.gamma_min)

    def stats(self) -> Dict[str, float]:
        return {"gamma": self.gamma, "gamma_floor_binds": float(self.floor_binds())}


def build_likelihood(name: str, kind: str, gamma_min: float = 0.0, output: Optional[str] = None) -> Likelihood:
    """The likelihood `name` for data of `kind`; `output` (images, mse / gaussian): 'linear' or
    'sigmoid' mean (None: sigmoid, what runs saved before the option used)."""
    if name == "mse":
        return SquaredError(kind, output or "sigmoid")
    if name == "bernoulli":
        return Bernoulli(kind)
    if name == "gaussian":
        return LearnedGaussian(kind, gamma_min, output or "sigmoid")
    raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {name!r}")


def check_bernoulli_data(x: torch.Tensor, what: str = "the training data") -> Optional[str]:
    """None when x lies in [0, 1], else a message saying why `bernoulli` does not apply."""
    lo, hi = float(x.min()), float(x.max())
    if lo < 0 or hi > 1:
        return (f"--likelihood bernoulli needs data in [0, 1], but {what} spans [{lo:.4g}, {hi:.4g}]; "
                "use --likelihood mse or gaussian (or rescale the data)")
    return None


def decoder_likelihood(model) -> Likelihood:
    """The likelihood p(x | z) of a trained model (the stage-1 autoencoder's for the ex-post reference)."""
    lik = getattr(model, "likelihood", None)
    if lik is None and hasattr(model, "ae"):
        lik = model.ae.likelihood
    if lik is None:
        raise ValueError(f"{type(model).__name__} has no decoder likelihood")
    return lik
