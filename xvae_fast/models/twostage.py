"""Two-Stage VAE (Dai & Wipf, "Diagnosing and Enhancing VAE Models", ICLR 2019; SPEC-related 4).

Stage 1 (the "kappa-simple" VAE): q(z|x) = N(mu, diag sigma^2), p(x|z) = N(f1(z), g^2 I) with one
learned scalar decoder standard deviation g = exp(log_gamma_std) (the library's `LearnedGaussian`; the
paper's gamma is the variance g^2). Per minibatch, one reparameterised sample z = mu + sigma * eps:

    L1 = (1/B) sum_b [ sum_p ((x_bp - f1(z_b)_p)^2 / (2 g^2) + log g + 0.5 log 2pi)
                       + 0.5 sum_j (mu_bj^2 + sigma_bj^2 - 2 log sigma_bj - 1) ]

(a sum over all d entries of an example, never a per-pixel mean; `loss_stage1`).

Stage 2: stage 1 is frozen and the posteriors (mu, log sigma^2) of every training example are extracted
once in eval mode (`posterior_codes`). A second VAE is trained on R^kappa on z = mu + sigma * eps with a
FRESH eps at every call (`loss_stage2`; `stage2_input="mean"` feeds mu instead: the ablation that
collapses the superfluous dimensions, SPEC 4.6), latent u of size `stage2_latent`, its own scalar
learned variance (a `LearnedGaussian` on vectors: identity mean) and the same loss form with d -> kappa.
Its nets are MLPs with a skip connection (as in the authors' code, not in the paper):
encoder depth x Dense(width, ReLU) -> h, [z, h] -> (mu_u, log sd_u) with sd_u = exp(log sd_u);
decoder depth x Dense(width, ReLU) -> h, [u, h] -> z_hat.

Generation (`generate`): u ~ N(0, alpha^2 I), z = f2(u) (+ g_z * eps with `stage2_noise`, the stage-2
decoder noise the authors' code adds), x = f1(z), the stage-1 decoder MEAN (no pixel noise). The
baseline "stage-1 only" (`generate_stage1_only`) decodes z ~ N(0, alpha^2 I). The two stages are
trained by separate optimisers (`stage_parameters`), never jointly (paper Sec. 4).

Stage-1 encoder standard deviation (`encoder_sd`): "exp" (sigma = exp(head), the WAE / ResNet
encoders of the code; default for `arch="library"`) or "softplus" (sigma = 1e-6 + softplus(head), the
code's InfoGAN encoder; default for `arch="paper"`). Both give sigma > 0 and the KL uses sigma^2.

Architectures (`arch`): "library" uses the library's body and decoder (models.architectures) with
linear heads; "paper" is the InfoGAN net of the paper's Table 1 for 28x28, 32x32 and 64x64 images
(encoder Conv64 4x4 s2 LReLU -> Conv128 4x4 s2 BN LReLU -> FC1024 BN LReLU -> heads; decoder
FC1024 BN ReLU -> FC 128 (s/4)^2 BN ReLU -> DeConv64 4x4 s2 BN ReLU -> DeConv C 4x4 s2, a raw output
that the likelihood maps to the mean: sigmoid on images). The code's spectral norm is left out.
Stage-2 width: the paper uses 1024 (2048 for the ResNet runs); the default 256 is the digits setting.

`mmd_to_standard_normal` is the Table 4 diagnostic MMD(q, N(0, I)).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Dict, List, Optional, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from .architectures import build_body, build_decoder
from .generative import GenerativeModule
from .baseline import check_routing, count
from .likelihood import LearnedGaussian, Likelihood
from .ops import get_ops
from ..errors import ConfigError
from ..options import ModelOptions, option
from .protocol import TERMS_VAE, ModelRecipe, ReferenceSampler, Stage, TensorRows, register
from ..shard import randn_rows

STAGE2_INPUTS = ("sampled", "mean")
ARCHS = ("library", "paper")
ENCODER_SDS = ("exp", "softplus")
STAGES = ("stage1", "stage2")
PAPER_SIZES = (28, 32, 64)
SD_FLOOR = 1e-6          # the code's softplus floor on the InfoGAN encoder's sigma


def _kl_std_normal(mu: torch.Tensor, log_sd: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag sigma^2) || N(0, I)) = 0.5 sum_j (mu^2 + sigma^2 - 2 log sigma - 1), per row."""
    return 0.5 * (mu.pow(2) + torch.exp(2 * log_sd) - 2 * log_sd - 1.0).sum(-1)


def _randn(shape, like: torch.Tensor, generator=None) -> torch.Tensor:
    return randn_rows(tuple(shape), dtype=like.dtype, device=like.device, generator=generator)


def _losses(recon: torch.Tensor, kl: torch.Tensor) -> Dict[str, torch.Tensor]:
    return {"loss": recon + kl, "recon": recon, "kl": kl, "kl_cat": torch.zeros_like(kl), "kl_gauss": kl}


# -- the paper's InfoGAN nets (Table 1) -----------------------------------------------------------------
class InfoGANBody(nn.Module):
    """Conv64 4x4 s2 LReLU -> Conv128 4x4 s2 BN LReLU -> FC1024 BN LReLU (features 1024)."""

    def __init__(self, shape: Sequence[int]):
        super().__init__()
        c, s, _ = shape
        q = s // 4
        self.net = nn.Sequential(
            nn.Conv2d(c, 64, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(64, 128, 4, 2, 1), nn.BatchNorm2d(128), nn.LeakyReLU(0.2),
            nn.Flatten(), nn.Linear(128 * q * q, 1024), nn.BatchNorm1d(1024), nn.LeakyReLU(0.2))
        self.features = 1024

    def forward(self, x):
        return self.net(x)


class InfoGANDecoder(nn.Module):
    """FC1024 BN ReLU -> FC 128 (s/4)^2 BN ReLU -> DeConv64 4x4 s2 BN ReLU -> DeConv C 4x4 s2 (raw)."""

    def __init__(self, latent: int, shape: Sequence[int]):
        super().__init__()
        c, s, _ = shape
        self.q = s // 4
        self.fc = nn.Sequential(
            nn.Linear(latent, 1024), nn.BatchNorm1d(1024), nn.ReLU(),
            nn.Linear(1024, 128 * self.q * self.q), nn.BatchNorm1d(128 * self.q * self.q), nn.ReLU())
        self.net = nn.Sequential(
            nn.ConvTranspose2d(128, 64, 4, 2, 1), nn.BatchNorm2d(64), nn.ReLU(),
            nn.ConvTranspose2d(64, c, 4, 2, 1))

    def forward(self, z):
        return self.net(self.fc(z).view(z.shape[0], 128, self.q, self.q))


def _check_paper_shape(kind: str, shape: Sequence[int]) -> None:
    shape = tuple(shape)
    if kind != "image" or len(shape) != 3 or shape[1] != shape[2] or shape[1] not in PAPER_SIZES:
        raise ValueError(f"arch 'paper' (the InfoGAN net of the paper's Table 1) takes square images of "
                         f"{PAPER_SIZES} pixels, got kind {kind!r} with shape {shape}; use arch 'library'")


# -- the two stages -------------------------------------------------------------------------------------
class Stage1VAE(nn.Module):
    """The stage-1 VAE: body -> (mu, sd) heads, decoder f1, a (learned-variance) likelihood."""

    def __init__(self, kind, shape, latent, hidden, likelihood: Likelihood, arch: str, encoder_sd: str):
        super().__init__()
        if arch == "paper":
            _check_paper_shape(kind, shape)
            self.body = InfoGANBody(shape)
            self.decoder = InfoGANDecoder(latent, shape)
        else:
            self.body = build_body(kind, shape, hidden)
            self.decoder = build_decoder(kind, latent, shape, hidden)
        f = self.body.features
        self.mu_head = nn.Linear(f, latent)
        self.sd_head = nn.Linear(f, latent)
        self.encoder_sd = encoder_sd
        self.likelihood = likelihood

    def encode_sd(self, x: torch.Tensor):
        """(mu, log sigma) of q(z | x), float32."""
        h = self.body(x)
        mu, a = self.mu_head(h).float(), self.sd_head(h).float()
        if self.encoder_sd == "softplus":
            log_sd = torch.log(SD_FLOOR + F.softplus(a))
        else:
            log_sd = a
        return mu, log_sd

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.likelihood.mean(self.decoder(z))


class Stage2VAE(nn.Module):
    """The stage-2 MLP VAE on R^kappa with skip connections and its own learned scalar variance."""

    def __init__(self, latent: int, stage2_latent: int, width: int, depth: int, gamma_min: float):
        super().__init__()
        self.latent, self.stage2_latent = latent, stage2_latent

        def mlp(d_in):
            mods, d = [], d_in
            for _ in range(depth):
                mods += [nn.Linear(d, width), nn.ReLU()]
                d = width
            return nn.Sequential(*mods)

        self.enc = mlp(latent)
        self.mu_head = nn.Linear(latent + width, stage2_latent)
        self.logsd_head = nn.Linear(latent + width, stage2_latent)
        self.dec = mlp(stage2_latent)
        self.out = nn.Linear(stage2_latent + width, latent)
        self.likelihood = LearnedGaussian("vector", gamma_min)

    def encode_sd(self, z: torch.Tensor):
        """(mu_u, log sd_u) of q(u | z); sd_u = exp(log sd_u) as in the code."""
        hz = torch.cat([z, self.enc(z)], -1)
        return self.mu_head(hz), self.logsd_head(hz)

    def decoder(self, u: torch.Tensor) -> torch.Tensor:
        """f2(u): the stage-2 decoder mean (identity likelihood mean on vectors)."""
        return self.out(torch.cat([u, self.dec(u)], -1))


class TwoStageVAE(GenerativeModule):
    """The Two-Stage VAE with the library's common model interface (see module docstring)."""

    mode = "twostage"
    requires_prior_fit = False     # the prior (stage 2) is learned, never fitted in closed form

    def __init__(self, kind: str, shape: Sequence[int], latent: int, hidden: Sequence[int] = (128, 128),
                 ops=None, likelihood: Optional[Likelihood] = None, stage2_latent: Optional[int] = None,
                 stage2_width: int = 256, stage2_depth: int = 3, stage2_input: str = "sampled",
                 stage2_noise: bool = True, gamma_min: float = 0.0, arch: str = "library",
                 encoder_sd: Optional[str] = None):
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"arch must be one of {ARCHS}, got {arch!r}")
        if stage2_input not in STAGE2_INPUTS:
            raise ValueError(f"stage2_input must be one of {STAGE2_INPUTS}, got {stage2_input!r}")
        for name, v in (("stage2_width", stage2_width), ("stage2_depth", stage2_depth)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        stage2_latent = latent if stage2_latent is None else stage2_latent
        for name, v in (("latent", latent), ("stage2_latent", stage2_latent)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        if not (isinstance(gamma_min, (int, float)) and gamma_min >= 0 and math.isfinite(gamma_min)):
            raise ValueError(f"gamma_min must be a finite number >= 0, got {gamma_min!r}")
        if encoder_sd is None:
            encoder_sd = "softplus" if arch == "paper" else "exp"
        if encoder_sd not in ENCODER_SDS:
            raise ValueError(f"encoder_sd must be one of {ENCODER_SDS}, got {encoder_sd!r}")
        if likelihood is None:
            likelihood = LearnedGaussian(kind, gamma_min)
        elif not isinstance(likelihood, Likelihood):
            raise ValueError(f"likelihood must be a Likelihood, got {type(likelihood).__name__}")
        self.kind, self.shape, self.latent = kind, tuple(shape), latent
        self.stage2_latent = stage2_latent
        self.stage2_input, self.stage2_noise, self.arch = stage2_input, bool(stage2_noise), arch
        self.gamma_min = float(gamma_min)
        self.plan = None
        self.prior = None          # the learned prior is stage 2
        self.ops = ops if ops is not None else get_ops()
        self.stage1 = Stage1VAE(kind, shape, latent, hidden, likelihood, arch, encoder_sd)
        self.stage2 = Stage2VAE(latent, stage2_latent, stage2_width, stage2_depth, gamma_min)

    # -- common interface ---------------------------------------------------------------------------
    @property
    def likelihood(self) -> Likelihood:
        """The stage-1 (data-space) likelihood."""
        return self.stage1.likelihood

    @property
    def decoder(self) -> nn.Module:
        return self.stage1.decoder

    def encode(self, x: torch.Tensor):
        """(None, mu, logvar) of the stage-1 posterior q(z | x)."""
        mu, log_sd = self.stage1.encode_sd(x)
        return None, mu, 2 * log_sd

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The stage-1 data-space mean f1(z)."""
        return self.stage1.decode(z)

    def forward(self, x: torch.Tensor, generator=None) -> Dict[str, torch.Tensor]:
        mu, log_sd = self.stage1.encode_sd(x)
        z = mu + torch.exp(log_sd) * _randn(mu.shape, mu, generator)
        return {"xhat": self.decode(z), "z": z, "mu": mu, "logvar": 2 * log_sd, "logits": None}

    def loss_stage1(self, x: torch.Tensor, generator=None) -> Dict[str, torch.Tensor]:
        """L1 (SPEC 4.1): the likelihood's nll (summed per example) + the KL to N(0, I), batch means."""
        mu, log_sd = self.stage1.encode_sd(x)
        z = mu + torch.exp(log_sd) * _randn(mu.shape, mu, generator)
        recon = self.likelihood.nll(self.stage1.decoder(z), x)
        kl = _kl_std_normal(mu, log_sd).mean()
        return _losses(recon, kl.to(recon.dtype))

    def loss(self, x: torch.Tensor, generator=None) -> Dict[str, torch.Tensor]:
        return self.loss_stage1(x, generator)

    def stage2_inputs(self, codes: torch.Tensor, generator=None) -> torch.Tensor:
        """The stage-2 training inputs z for frozen codes [mu, logvar]: mu + sigma * eps with fresh eps
        ("sampled"), or mu ("mean")."""
        if codes.dim() != 2 or codes.shape[1] != 2 * self.latent:
            raise ValueError(f"codes must have shape (B, 2 * latent) = (B, {2 * self.latent}) "
                             f"([mu, logvar] of stage 1), got {tuple(codes.shape)}")
        codes = codes.detach()
        mu, logvar = codes[:, :self.latent], codes[:, self.latent:]
        if self.stage2_input == "mean":
            return mu
        return mu + torch.exp(0.5 * logvar) * _randn(mu.shape, mu, generator)

    def loss_stage2(self, codes: torch.Tensor, generator=None) -> Dict[str, torch.Tensor]:
        """The stage-2 VAE loss on frozen stage-1 codes (B, 2 * latent) = [mu, logvar]."""
        z = self.stage2_inputs(codes, generator)
        mu_u, log_sd_u = self.stage2.encode_sd(z)
        u = mu_u + torch.exp(log_sd_u) * _randn(mu_u.shape, mu_u, generator)
        recon = self.stage2.likelihood.nll(self.stage2.decoder(u), z)
        kl = _kl_std_normal(mu_u, log_sd_u).mean()
        return _losses(recon, kl.to(recon.dtype))

    @torch.no_grad()
    def posterior_codes(self, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
        """(B, 2 * latent) float32 [mu, logvar] of stage 1 in eval mode (BN running statistics); the
        model's train/eval flags are restored afterwards."""
        flags = [(m, m.training) for m in self.modules()]
        self.eval()
        try:
            out = []
            for i in range(0, x.shape[0], batch_size):
                _, mu, logvar = self.encode(x[i:i + batch_size])
                out.append(torch.cat([mu, logvar], 1).float())
            return torch.cat(out, 0)
        finally:
            for m, t in flags:
                m.training = t

    @torch.no_grad()
    def encode_stage2(self, codes: torch.Tensor, generator=None) -> torch.Tensor:
        """Samples u ~ q(u | z) for the stage-2 inputs z of `codes` (the Table 4 q(u) samples)."""
        z = self.stage2_inputs(codes, generator)
        mu_u, log_sd_u = self.stage2.encode_sd(z)
        return mu_u + torch.exp(log_sd_u) * _randn(mu_u.shape, mu_u, generator)

    @torch.no_grad()
    def sample_latent(self, n: int, alpha: float = 1.0, generator=None) -> torch.Tensor:
        """Two-stage codes z = f2(u) (+ g_z * eps with stage2_noise), u ~ N(0, alpha^2 I)."""
        ref = self.stage2.out.weight
        u = alpha * torch.randn(n, self.stage2_latent, dtype=ref.dtype, device=ref.device,
                                generator=generator)
        z = self.stage2.decoder(u)
        if self.stage2_noise:
            z = self.stage2.likelihood.draw(z, generator)
        return z

    @torch.no_grad()
    def generate(self, n: int, alpha: float = 1.0, routing: Optional[str] = None,
                 generator=None) -> torch.Tensor:
        """n two-stage samples: x = f1(z), z from `sample_latent` (the stage-1 mean, no pixel noise).
        `routing` is accepted for the common interface and checked (it does not apply)."""
        if routing is not None:
            check_routing(routing)
        return self.decode(self.sample_latent(n, alpha, generator).float()).float()

    @torch.no_grad()
    def generate_stage1_only(self, n: int, alpha: float = 1.0, generator=None) -> torch.Tensor:
        """The stage-1-only baseline: x = f1(z), z ~ N(0, alpha^2 I)."""
        ref = self.stage1.mu_head.weight
        z = alpha * torch.randn(n, self.latent, dtype=ref.dtype, device=ref.device, generator=generator)
        return self.decode(z.float()).float()

    def prior_parameters(self) -> List[nn.Parameter]:
        return list(self.stage2.parameters())

    def stage_parameters(self, stage: str) -> List[nn.Parameter]:
        """The parameters the optimiser of `stage` owns ("stage1": encoder, decoder and the stage-1
        likelihood's log_gamma_std; "stage2": the stage-2 VAE and its own log_gamma_std)."""
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
        return list((self.stage1 if stage == "stage1" else self.stage2).parameters())

    def param_counts(self) -> Dict[str, int]:
        """Trainable parameters of both stages, and of stage 2 (the learned prior) alone."""
        return {"total": count(self.parameters()), "prior": count(self.stage2.parameters())}

    def set_step(self, step: int) -> None:
        """Schedules hook of the common interface (none here)."""

    def set_total_steps(self, total: int) -> None:
        """Schedules hook of the common interface (none here)."""

    def _device(self) -> torch.device:
        return next(self.parameters()).device


# -- MMD to N(0, I) (Table 4) ---------------------------------------------------------------------------
def _imq_sum(a: torch.Tensor, b: torch.Tensor, C: float, chunk: int) -> float:
    """sum_{i, j} C / (C + ||a_i - b_j||^2), in row/column blocks of `chunk` (float64)."""
    total = 0.0
    an, bn = a.pow(2).sum(1), b.pow(2).sum(1)
    for i in range(0, a.shape[0], chunk):
        ai, ani = a[i:i + chunk], an[i:i + chunk]
        for j in range(0, b.shape[0], chunk):
            d2 = (ani[:, None] + bn[None, j:j + chunk] - 2 * ai @ b[j:j + chunk].T).clamp_min_(0)
            total += float((C / (C + d2)).sum())
    return total


def mmd_to_standard_normal(z: torch.Tensor, n_ref: Optional[int] = None, generator=None,
                           bandwidth: Optional[float] = None, chunk: int = 2048) -> float:
    """The unbiased estimate (U-statistic) of MMD^2 between codes z (N, k) and n_ref (default N)
    samples of N(0, I_k), with the inverse multiquadratic kernel k(x, y) = C / (C + ||x - y||^2) and
    C = `bandwidth`, by default 2k (WAE's choice for a unit-variance prior):

        MMD^2_u = 1/(N(N-1)) sum_{i != j} k(z_i, z_j) + 1/(M(M-1)) sum_{i != j} k(y_i, y_j)
                  - 2/(NM) sum_{i, j} k(z_i, y_j).

    It can be slightly negative when the two match. Computed in float64 in blocks of `chunk` rows
    (memory O(chunk^2)); the reference is drawn at once (`generator` on z's device), so the chunk
    size does not change the value beyond rounding."""
    if z.dim() != 2 or z.shape[0] < 2:
        raise ValueError(f"z must have shape (N, k) with N >= 2, got {tuple(z.shape)}")
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be an integer >= 1, got {chunk!r}")
    n, k = z.shape
    m = n if n_ref is None else int(n_ref)
    if m < 2:
        raise ValueError(f"n_ref must be >= 2, got {n_ref!r}")
    C = 2.0 * k if bandwidth is None else float(bandwidth)
    if not (C > 0 and math.isfinite(C)):
        raise ValueError(f"bandwidth must be a finite number > 0, got {bandwidth!r}")
    x = z.detach().to(torch.float64)
    y = torch.randn(m, k, dtype=torch.float64, device=x.device, generator=generator)
    # the diagonal terms k(a, a) = 1 are removed exactly
    kxx = (_imq_sum(x, x, C, chunk) - n) / (n * (n - 1))
    kyy = (_imq_sum(y, y, C, chunk) - m) / (m * (m - 1))
    kxy = _imq_sum(x, y, C, chunk) / (n * m)
    return float(kxx + kyy - 2 * kxy)


# -- the recipe the trainer drives (models/protocol.py) --------------------------------------------

MMD_POINTS = 2000      # codes used for summary.json's MMD to N(0, I) (paper Table 4's direction)


class Stage1Sampler(ReferenceSampler):
    """The Two-Stage VAE's reference: stage-1-only sampling, z ~ N(0, I) decoded by stage 1 (what the
    second stage must beat)."""
    mode = "stage1"
    reference_title = "stage-1-only sampling"
    reference_label = "two-stage VAE, stage-1 decoder on N(0, I)"

    def param_counts(self):
        n = sum(p.numel() for p in self.model.stage_parameters("stage1") if p.requires_grad)
        return {"total": int(n), "prior": 0}

    @torch.no_grad()
    def generate(self, n: int, alpha: float = 1.0, routing: Optional[str] = None, generator=None):
        return self.model.generate_stage1_only(n, alpha, generator=generator)


@dataclasses.dataclass
class TwoStageOptions(ModelOptions):
    arch: str = option("library", "the library's nets or the paper's architecture (SPEC-related 4.2; "
                       "28x28, 32x32, 64x64)", choices=ARCHS)
    epochs_stage2: Optional[int] = option(None, "epochs of the second VAE, on the frozen stage-1 codes",
                                          type="int", metavar="N", minimum=0, default_text="2x --epochs-vae")
    stage2_latent: Optional[int] = option(None, "size of the stage-2 latent u", type="int", metavar="U",
                                          minimum=1, default_text="K")
    stage2_width: int = option(256, "width of the stage-2 MLP (the paper 1024)", metavar="W", minimum=1)
    stage2_depth: int = option(3, "hidden layers of the stage-2 encoder and decoder", metavar="L", minimum=1)
    stage2_input: str = option("sampled", "stage 2 trains on z ~ q(z|x) redrawn every step (sampled, the "
                               "paper) or on its mean (mean, the ablation)", choices=STAGE2_INPUTS)
    stage2_noise: bool = option(True, "generation adds the stage-2 decoder noise (the authors' code)")

    def finish(self, cfg, kind):
        if cfg.epochs_vae < 1:
            raise ConfigError("the Two-Stage VAE's second stage trains on the codes of a trained stage 1: "
                              f"--epochs-vae must be >= 1, got {cfg.epochs_vae}")
        changes = {}
        if self.epochs_stage2 is None:
            changes["epochs_stage2"] = 2 * cfg.epochs_vae     # SPEC-related 4.2: stage 2 twice as long
        if self.stage2_latent is None:
            changes["stage2_latent"] = cfg.latent
        return self.replace(**changes)


@register
class TwoStageRecipe(ModelRecipe):
    """Stages: `stage1` (the VAE with the learned decoder variance, on the data), `codes` (freeze the
    stage-1 posteriors [mu, logvar] of the training and test sets), `stage2` (the second VAE on
    z ~ q(z|x) redrawn from the frozen posteriors every step, its own optimiser and variance)."""
    name = "twostage"
    title = "Two-Stage VAE"
    Options = TwoStageOptions
    likelihoods = ("gaussian",)
    likelihood_reason = "stage 1 learns its scalar decoder variance gamma, paper 004"
    reference_samplers = ("stage1",)
    # SPEC-related 4.2: kappa >= the manifold dimension, and long runs (gamma falls about one learning
    # rate per step); the paper: MNIST 400 / 800 epochs, CelebA 120 / 300, kappa = 64
    dataset_defaults = {"digits": {"latent": 16, "epochs_vae": 300}, "clusters": {"epochs_vae": 200},
                        "mnist": {"latent": 64, "epochs_vae": 400}, "celeba": {"latent": 64, "epochs_vae": 120},
                        "images": {"latent": 64, "epochs_vae": 120}}

    def __init__(self, cfg, info, ops=None):
        self.codes: Optional[Dict[str, torch.Tensor]] = None
        super().__init__(cfg, info, ops)

    def build(self):
        c, o, i = self.cfg, self.opts, self.info
        model = TwoStageVAE(i.kind, i.shape, c.latent, self.hidden, ops=self.ops, likelihood=self.likelihood(),
                            stage2_latent=o.stage2_latent, stage2_width=o.stage2_width,
                            stage2_depth=o.stage2_depth, stage2_input=o.stage2_input,
                            stage2_noise=o.stage2_noise, gamma_min=c.gamma_min or 0.0, arch=o.arch)
        return {"ae": None, "vae": model}

    def stages(self):
        return [Stage("stage1", "train", "stage-1 VAE", self.cfg.epochs_vae, TERMS_VAE),
                Stage("codes", "fit", "stage-1 codes"),
                Stage("stage2", "train", "stage-2 VAE", self.opts.epochs_stage2, TERMS_VAE)]

    def stage_parameters(self, stage):
        return self.generative.stage_parameters(stage.name)

    def stage_data(self, stage, split, data):
        if stage.name == "stage2":
            return TensorRows(self.codes[split])
        return super().stage_data(stage, split, data)

    def loss(self, stage, batch):
        if stage.name == "stage2":
            return self.generative.loss_stage2(batch)
        return self.generative.loss_stage1(batch)

    def epoch_stats(self, stage):
        part = self.generative.stage2 if stage.name == "stage2" else self.generative.stage1
        return part.likelihood.stats()

    def fit(self, stage, trainer) -> None:
        model = self.generative
        self.codes = {split: trainer.encode(model.posterior_codes, split) for split in ("train", "test")}
        trainer.log(f"stage-1 posteriors frozen: {tuple(self.codes['train'].shape)} training codes "
                    f"[mu, logvar]; stage 2 redraws z from them every step ({self.opts.stage2_input})")

    def check_stage_ready(self, stage):
        if stage.name == "stage2" and self.codes is None:
            return ("stage 2 of the Two-Stage VAE needs the frozen stage-1 codes, but the checkpoint "
                    "holds none: the run has not finished stage 1")
        return None

    def headline_stage(self):
        return self.stage("stage1")     # the model's objective on x; stage 2's is on the codes

    def sampling_stage(self) -> str:
        return "stage2"

    def state(self):
        return {"codes": self.codes}

    def load_state(self, ck, path):
        self.codes = ck.get("codes")

    def reference_models(self):
        return {"stage1": Stage1Sampler(self.generative)}

    @torch.no_grad()
    def summary(self):
        """MMD of the codes to N(0, I): stage 1's q(z) against stage 2's q(u) (paper Table 4)."""
        model = self.generative
        out: Dict[str, object] = {"stage2_gamma": model.stage2.likelihood.gamma,
                                  "stage2_input": self.opts.stage2_input}
        if self.codes is not None:
            dev = next(model.parameters()).device
            g = torch.Generator(device=dev).manual_seed(self.cfg.seed + 17)
            codes = self.codes["test"][:MMD_POINTS].to(dev)
            mu, logvar = codes.chunk(2, dim=1)
            z = mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape, device=dev, generator=g)
            was = model.training
            model.eval()
            u = model.encode_stage2(codes, generator=g)
            model.train(was)
            out["mmd_stage1_codes"] = mmd_to_standard_normal(z, generator=g)
            out["mmd_stage2_codes"] = mmd_to_standard_normal(u, generator=g)
        return out
