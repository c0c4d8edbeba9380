"""AVAE: the aggregate posterior matched by a kernel density estimate (Saha, Joshi, Whitaker, "Matching
aggregate posteriors in the VAE", ICPR 2024; SPEC-related 2).

Deterministic encoder z = E(x) (the library's body and ONE latent head: no variance head), decoder D
with the run's likelihood (`mse`: the summed squared error, the paper's Gaussian; `bernoulli`), prior
N(0, I). The aggregate posterior is the isotropic Gaussian KDE on m centres c_j = E(x'_j) of a KDE
subset X_kde of the training set, with bandwidth h (xvae_fast.models.bandwidth):

    log q(z) = logsumexp_j(-||z - c_j||^2 / (2 h^2)) - log m - l log h - (l/2) log 2 pi   (ops.kde_log_prob)

and one minibatch's loss (paper Alg. 1, Eqs. 6 and 9; the decoder only sees the first term, so one
joint loss equals the paper's two updates):

    L = mean_b[-log p(x_b | E(x_b))] + beta * mean_b[log q(z_b) - log p(z_b)],  centres without gradient.

The schedule (`AVAERecipe`): a fixed validation part of the training set (seeded by --split-seed) is
held out; every epoch (k_e = 1) the rest is redrawn into X_kde (m rows, without replacement) and the SGD
set (the others), a deterministic function of (--seed, epoch), and the epoch's minibatches come from
the SGD set only. The centres are re-encoded (all m, eval mode, no grad, batched) before every step
whose global index is a multiple of k_b (step 0 included, the code's `train_iter % 10 == 0`) AND
before the first step of every epoch, since its KDE subset is new (paper Alg. 1 line 13 encodes the
new subset when it is drawn; the authors' trainer lands on a refresh there too, its counter being
epoch * (n_train // B) + step with n_train // B = 500 on MNIST). beta is set on the validation part
before epoch 0 and recomputed after every epoch (eval mode, no grad); it takes effect from the next
epoch, so an epoch's test loss uses the beta its steps used.

Readings (config.yaml and summary.json record them):
- beta: "rule" (default, Eq. 9: the mean of the unsquared norms ||x - D(E(x))||_2); "rms" (the
  authors' trainer: the square root of the mean squared norm, recomputed per epoch; "rms:V" starts
  epoch 0 at V, as the code starts at sqrt(S)); "const:V" (a fixed weight).
- KL term: natural log with logsumexp (default, the paper); with `kde_floor` = max_cdf, the authors'
  code: q and p without their (2 pi)^(l/2), q + eps_q with eps_q = exp(-chi2_l^{-1}(max_cdf) / 2) h^-l,
  p + 1e-30, in log base 10 (computed as a log-space sum: the code's value without its float32
  underflow). Both forms give the centres no gradient.

Generation: z ~ N(0, (1 - h^2) alpha^2 I) (the aggregate posterior the training converges to, paper
III-B3), x = D(z); `generate_prior` decodes N(0, alpha^2 I) (the reference sampler "normal").
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from .bandwidth import Bandwidth, bandwidth_for, given_bandwidth
from ..data.base import SubsetData
from .architectures import build_body, build_decoder
from .generative import GenerativeModule
from .baseline import check_routing, count
from .likelihood import Likelihood, SquaredError
from .ops import get_ops
from ..errors import ConfigError
from ..options import ModelOptions, option
from .protocol import ModelRecipe, ReferenceSampler, Stage, register

LOG_2PI = math.log(2 * math.pi)
LN10 = math.log(10.0)
TARGET_FLOOR = 1e-30            # the code's floor on p(z)
TERMS = ("loss", "recon", "kl")
BETA_KINDS = ("rule", "rms", "const")
# KDE centres m per dataset kind (SPEC-related 2.2: MNIST 10K, CelebA 20K, CIFAR 10K; digits 512;
# the 2-D sets 1,000); the default is capped at half of the rows left after the validation part
CENTRES = {"digits": 512, "mnist": 10_000, "celeba": 20_000, "images": 10_000, "clusters": 1000,
           "npy": 1000}
DEFAULT_CENTRES_OTHER = 1000
# ReduceLROnPlateau patience in epochs: the paper's 5 where an epoch is hundreds of steps; off on the
# bundled sets, whose epochs are a few steps (5 digits epochs = 40 steps would halve it every 40 steps)
PLATEAU_PATIENCE = {"mnist": 5, "celeba": 5, "images": 5}
VAL_STREAM, KDE_STREAM = 7, 11      # numpy seed streams of the validation split and the KDE draws
ENTROPY_SEED = 5
ENTROPY_POINTS = 10_000             # the paper's 10K held-out codes
REFERENCE_ENTRIES = 40_000_000      # n * n * l differences the reference op may materialise


# -- readings ---------------------------------------------------------------------------------------
def parse_beta(spec) -> Tuple[str, Optional[float]]:
    """'rule' | 'rms' | 'rms:V' | 'const:V' -> (kind, value or None)."""
    if not isinstance(spec, str):
        raise ValueError(f"--avae-beta must be rule, rms, rms:V or const:V, got {spec!r}")
    kind, _, value = spec.strip().partition(":")
    kind = kind.strip().lower()
    if kind not in BETA_KINDS or (kind == "rule" and value) or (kind == "const" and not value):
        raise ValueError(f"--avae-beta must be rule, rms, rms:V or const:V (V > 0), got {spec!r}")
    if not value:
        return kind, None
    try:
        v = float(value)
    except ValueError:
        raise ValueError(f"--avae-beta {spec!r}: {value!r} is not a number") from None
    if not (v > 0 and math.isfinite(v)):
        raise ValueError(f"--avae-beta {spec!r}: the weight must be a finite number > 0")
    return kind, v


def floor_log_epsilon(latent: int, h: float, max_cdf: float) -> float:
    """log eps_q of the code: eps_q = exp(-chi2_l^{-1}(max_cdf) / 2) * h^-l (its rounding of h^2
    inside chi2.ppf(scale=...) cancels)."""
    from scipy.stats import chi2
    return -0.5 * float(chi2.ppf(max_cdf, df=latent)) - latent * math.log(h)


def reading(opts) -> str:
    """'paper' or a description of the code-parity options a run uses (`opts`: its AVAEOptions)."""
    parts = []
    if opts.avae_beta != "rule":
        parts.append(f"beta {opts.avae_beta}")
    if opts.avae_kde_floor is not None:
        parts.append(f"KDE floor max_cdf {opts.avae_kde_floor:g}, log10")
    return "paper" if not parts else "code parity (" + "; ".join(parts) + ")"


# -- the model --------------------------------------------------------------------------------------
class AVAE(GenerativeModule):
    """Deterministic encoder and decoder of the AVAE with the library's common model interface; the
    bandwidth h (and h_opt) are buffers, so a checkpoint samples without the estimator."""
    interpolates = True        # interpolate(x1, x2, t): evaluate scores the interpolation FD

    mode = "avae"
    requires_prior_fit = False

    def __init__(self, kind: str, shape: Sequence[int], latent: int, hidden: Sequence[int] = (128, 128),
                 ops=None, likelihood: Optional[Likelihood] = None, kde_floor: Optional[float] = None):
        super().__init__()
        if isinstance(latent, bool) or not isinstance(latent, int) or latent < 1:
            raise ValueError(f"latent must be an integer >= 1, got {latent!r}")
        if kde_floor is not None and not (isinstance(kde_floor, (int, float)) and 0 < kde_floor < 1):
            raise ValueError(f"kde_floor (max_cdf) must lie in (0, 1), got {kde_floor!r}")
        self.kind, self.shape, self.latent = kind, tuple(shape), latent
        self.plan = None
        self.prior = None               # N(0, I), not a fitted MixturePrior
        self.ops = ops if ops is not None else get_ops()
        self.body = build_body(kind, shape, hidden)
        self.z_head = nn.Linear(self.body.features, latent)
        self.decoder = build_decoder(kind, latent, shape, hidden)
        self.likelihood = likelihood if likelihood is not None else SquaredError(kind)
        self.kde_floor = None if kde_floor is None else float(kde_floor)
        self.register_buffer("bandwidth", torch.zeros((), dtype=torch.float64))
        self.register_buffer("bandwidth_opt", torch.zeros((), dtype=torch.float64))

    # -- bandwidth ------------------------------------------------------------------------------------
    def set_bandwidth(self, h_opt: float, h: float) -> None:
        if not 0 < h < 1:
            raise ValueError(f"the AVAE's bandwidth must lie in (0, 1), got {h!r}")
        self.bandwidth.fill_(float(h))
        self.bandwidth_opt.fill_(float(h_opt))

    @property
    def h(self) -> float:
        h = float(self.bandwidth)
        if not h > 0:
            raise RuntimeError("the AVAE's KDE bandwidth is not set (a fresh run sets it before training)")
        return h

    @property
    def latent_std(self) -> float:
        """sqrt(1 - h^2): the standard deviation of the aggregate posterior at the fixed point."""
        return math.sqrt(1.0 - self.h ** 2)

    # -- encoder / decoder ------------------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """z = E(x), float32 (B, l)."""
        return self.z_head(self.body(x)).float()

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The data-space mean D(z)."""
        return self.likelihood.mean(self.decoder(z))

    def forward(self, x: torch.Tensor, generator=None) -> Dict[str, torch.Tensor]:
        """The deterministic reconstruction D(E(x)) (`generator` unused: no noise)."""
        z = self.encode(x)
        return {"xhat": self.decode(z), "z": z, "mu": z, "logvar": None, "logits": None}

    # -- the objective --------------------------------------------------------------------------------
    def kl_rows(self, z: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
        """log q(z_b) - log p(z_b) per row (B,): natural log (paper), or the code's floored log10."""
        latent = z.shape[1]
        log_q = self.ops.kde_log_prob(z, centres.detach(), self.h)
        sq = 0.5 * z.pow(2).sum(1)
        if self.kde_floor is None:
            return log_q + sq + 0.5 * latent * LOG_2PI
        log_eps = floor_log_epsilon(latent, self.h, self.kde_floor)
        q = torch.logaddexp(log_q + 0.5 * latent * LOG_2PI, torch.full_like(log_q, log_eps))
        p = torch.logaddexp(-sq, torch.full_like(sq, math.log(TARGET_FLOOR)))
        return (q - p) / LN10

    def loss(self, x: torch.Tensor, centres: torch.Tensor, beta: float) -> Dict[str, torch.Tensor]:
        """{"loss", "recon", "kl"}: loss = recon + beta * kl, each a batch mean."""
        z = self.encode(x)
        recon = self.likelihood.nll(self.decoder(z), x)
        kl = self.kl_rows(z, centres).mean().to(recon.dtype)
        return {"loss": recon + float(beta) * kl, "recon": recon, "kl": kl}

    # -- generation -----------------------------------------------------------------------------------
    def _normal(self, n: int, generator=None) -> torch.Tensor:
        ref = self.z_head.weight
        where = generator.device if generator is not None else ref.device
        return torch.randn(n, self.latent, generator=generator, device=where, dtype=ref.dtype).to(ref.device)

    @torch.no_grad()
    def sample_latent(self, n: int, alpha: float = 1.0, generator=None) -> torch.Tensor:
        """z ~ N(0, (1 - h^2) alpha^2 I): the aggregate posterior the training converges to."""
        return alpha * self.latent_std * self._normal(n, generator)

    @torch.no_grad()
    def generate(self, n: int, alpha: float = 1.0, routing: Optional[str] = None,
                 generator=None) -> torch.Tensor:
        """n decoded samples D(z), z ~ N(0, (1 - h^2) alpha^2 I); `routing` is checked for the common
        interface (it does not apply)."""
        if routing is not None:
            check_routing(routing)
        return self.decode(self.sample_latent(n, alpha, generator)).float()

    @torch.no_grad()
    def generate_prior(self, n: int, alpha: float = 1.0, generator=None) -> torch.Tensor:
        """The reference: D(z), z ~ N(0, alpha^2 I) (the prior instead of the predicted posterior)."""
        return self.decode(alpha * self._normal(n, generator)).float()

    @torch.no_grad()
    def interpolate(self, x1: torch.Tensor, x2: torch.Tensor, t: float = 0.5) -> torch.Tensor:
        """D((1 - t) E(x1) + t E(x2)) for two batches of the same size."""
        if x1.shape != x2.shape:
            raise ValueError(f"x1 and x2 must have the same shape, got {tuple(x1.shape)} and "
                             f"{tuple(x2.shape)}")
        return self.decode((1 - t) * self.encode(x1) + t * self.encode(x2))

    def param_counts(self) -> Dict[str, int]:
        return {"total": count(self.parameters()), "prior": 0}

    def set_step(self, step: int) -> None:
        """Schedules hook of the common interface (none)."""

    def set_total_steps(self, total: int) -> None:
        """Schedules hook of the common interface (none)."""


class NormalSampler(ReferenceSampler):
    """The AVAE's reference sampler: its decoder on N(0, I) instead of N(0, (1 - h^2) I) (the
    "silent quality loss" of SPEC-related 2.6)."""
    mode = "normal"
    reference_title = "prior sampling"
    reference_label = "AVAE decoder on N(0, I)"

    @torch.no_grad()
    def generate(self, n: int, alpha: float = 1.0, routing: Optional[str] = None, generator=None):
        if routing is not None:
            check_routing(routing)
        return self.model.generate_prior(n, alpha, generator)


# -- diagnostics (paper Tables V and VI, the fixed point of III-B3) ------------------------------------
def gaussian_fit_kl(z: torch.Tensor) -> float:
    """KL(N(mu, Sigma) || N(0, I)) of the Gaussian fitted to codes z (n, l) (paper Table V)."""
    z = z.double()
    mu = z.mean(0)
    cov = torch.cov(z.T).reshape(z.shape[1], z.shape[1])
    logdet = torch.linalg.slogdet(cov)[1]
    return float(0.5 * (torch.trace(cov) + mu @ mu - z.shape[1] - logdet))


def whiten(z: torch.Tensor) -> torch.Tensor:
    """(z - mean) Sigma^{-1/2} (symmetric inverse square root of the sample covariance)."""
    z = z.double()
    c = z - z.mean(0)
    evals, evecs = torch.linalg.eigh(torch.cov(c.T).reshape(z.shape[1], z.shape[1]))
    return c @ (evecs * evals.clamp_min(1e-12).rsqrt()) @ evecs.T


def kde_entropy(w: torch.Tensor, h: float, ops) -> float:
    """-mean_j log q_{-j}(w_j) - (l/2) log 2 pi: the leave-one-out KDE entropy with the constant
    dropped (paper Eq. 12, Table VI; N(0, I) has l/2)."""
    w = w.double()
    log_q = ops.kde_log_prob(w, w, h, exclude_self=True)
    return float(-log_q.mean() - 0.5 * w.shape[1] * LOG_2PI)


def entropy_points(n: int, latent: int, ops) -> int:
    """How many held-out codes the entropy uses: all up to ENTROPY_POINTS with the fused op (it never
    materialises the n x n x l differences); the plain-PyTorch reference does, so it gets fewer."""
    import xvae_fast
    if ops is xvae_fast:
        return min(n, ENTROPY_POINTS)
    return min(n, ENTROPY_POINTS, int(math.sqrt(REFERENCE_ENTRIES / max(1, latent))))


def latent_diagnostics(z_train: torch.Tensor, z_test: torch.Tensor, h: float, ops,
                       seed: int = ENTROPY_SEED) -> Dict[str, Any]:
    """The fixed-point check on the training encodings (covariance eigenvalues against 1 - h^2, the
    mean) and the paper's Table V / VI diagnostics on the held-out encodings."""
    latent = z_train.shape[1]
    target = 1.0 - h * h
    out: Dict[str, Any] = {"target_variance": target}
    if z_train.shape[0] > latent:
        zt = z_train.double()
        ev = torch.linalg.eigvalsh(torch.cov(zt.T).reshape(latent, latent)).flip(0)
        out["train"] = {"n": int(zt.shape[0]), "mean": zt.mean(0).tolist(),
                        "mean_norm": float(zt.mean(0).norm()),
                        "cov_eigenvalues": ev.tolist(),
                        "max_rel_eigenvalue_error": float((ev / target - 1).abs().max())}
    if z_test.shape[0] > latent + 1:
        n = entropy_points(z_test.shape[0], latent, ops)
        w = whiten(z_test[:n])
        g = torch.Generator().manual_seed(seed)
        ref = torch.randn(n, latent, generator=g, dtype=torch.float64)
        out["test"] = {"n": int(z_test.shape[0]), "gaussian_fit_kl": gaussian_fit_kl(z_test),
                       "entropy_points": n, "whitened_entropy": kde_entropy(w, h, ops),
                       "whitened_entropy_normal_reference": kde_entropy(whiten(ref), h, ops),
                       "gaussian_entropy": 0.5 * latent}
    return out


# -- the per-epoch learning-rate plateau schedule ------------------------------------------------------
class PlateauPerEpoch:
    """ReduceLROnPlateau(x factor, patience) on the validation loss, stepped once per epoch by the
    recipe's `end_epoch`; the trainer's per-step `step()` is a no-op. Its state is in the checkpoint."""

    def __init__(self, optimizer, patience: int, factor: float = 0.5):
        self.inner = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=factor,
                                                                patience=patience)

    def step(self) -> None:
        """Per optimizer step (the trainer): nothing; the schedule moves per epoch."""

    def epoch_end(self, metric: float) -> None:
        self.inner.step(metric)

    def state_dict(self) -> Dict[str, Any]:
        return self.inner.state_dict()

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.inner.load_state_dict(state)


# -- the recipe the trainer drives (models/protocol.py) --------------------------------------------
@dataclasses.dataclass
class AVAEOptions(ModelOptions):
    avae_centres: Optional[int] = option(
        None, "KDE centres m, redrawn every epoch (at most half of the rows left after the validation "
        "part)", type="int", metavar="M", minimum=2, optional=True,
        default_text="digits 512, mnist 10000, celeba 20000, else 1000")
    avae_val_fraction: float = option(0.1, "share of the training set held out to set beta and the "
                                      "plateau schedule", metavar="F", above=0, below=1)
    avae_refresh_steps: int = option(10, "k_b: re-encode the centres every KB global steps and at each "
                                     "epoch's new subset", metavar="KB", minimum=1)
    avae_beta: str = option("rule", "rule (paper Eq. 9: mean validation ||x - D(E(x))||), rms (the authors' "
                            "trainer: root mean square), rms:V (rms from V at epoch 0), const:V (a fixed "
                            "weight, e.g. const:6.14 for the code's MNIST weight)", metavar="RULE")
    avae_bandwidth: Optional[float] = option(
        None, "the used KDE bandwidth h in (0, 1)", type="float", metavar="H", above=0, below=1,
        optional=True, default_text="h_opt(l, m) estimated, then h = h_opt / sqrt(1 + h_opt^2)")
    avae_kde_floor: Optional[float] = option(
        None, "the authors' code's KL term: linear-space KDE plus the floor exp(-chi2_l^-1(MAX_CDF)/2) "
        "h^-l, in log10 (e.g. 0.999999 for MNIST)", type="float", metavar="MAX_CDF", above=0, below=1,
        optional=True, default_text="the paper's natural-log logsumexp, no floor")
    avae_lr_plateau: Optional[int] = option(
        None, "halve the learning rate when the validation loss has not improved for P epochs (0: off; "
        "with 0 --lr-schedule applies)", type="int", metavar="P", minimum=0,
        per_dataset={**PLATEAU_PATIENCE, "*": 0})

    def finish(self, cfg, kind):
        if cfg.epochs_vae < 1:
            raise ConfigError("the AVAE's KDE centres and beta come from training: --epochs-vae must be "
                              f">= 1, got {cfg.epochs_vae}")
        try:
            parse_beta(self.avae_beta)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        p = self.avae_lr_plateau
        if p > 0 and cfg.lr_schedule != "none":
            raise ConfigError(f"--avae-lr-plateau {p} and --lr-schedule {cfg.lr_schedule} are two learning-"
                              "rate schedules: choose one (--avae-lr-plateau 0 uses --lr-schedule)")
        return self


@register
class AVAERecipe(ModelRecipe):
    """Stages: `vae` (the AVAE on the epoch's SGD set, the KDE centres refreshed every k_b steps) and
    `latents` (the latent diagnostics of summary.json)."""
    name = "avae"
    title = "AVAE"
    Options = AVAEOptions
    likelihoods = ("mse", "bernoulli")
    likelihood_reason = "the paper's Gaussian decoder (summed squared error) or a Bernoulli one, paper 002"
    reference_samplers = ("normal",)
    # SPEC-related 2.2: MNIST l = 16 and CelebA l = 64 for 50 epochs; digits (ours) l = 8, 100 epochs
    dataset_defaults = {"digits": {"latent": 8, "epochs_vae": 100}, "mnist": {"latent": 16, "epochs_vae": 50},
                        "celeba": {"latent": 64, "epochs_vae": 50}}

    def __init__(self, cfg, info, ops=None):
        self.beta_kind, self.beta_value = parse_beta(cfg.option("avae_beta", "rule"))
        self.bw: Optional[Bandwidth] = None
        self.centres: Optional[torch.Tensor] = None
        self.centres_epoch: Optional[int] = None       # the epoch whose KDE subset the centres encode
        self.epoch: Optional[int] = None               # the epoch whose split is drawn
        self.kde_index: Optional[np.ndarray] = None
        self.beta: Optional[float] = None              # the weight of the current epoch's steps
        self.beta_next: Optional[float] = None         # recomputed after an epoch, used from the next
        self.beta_history: List[float] = []            # beta of epoch 0, 1, ...
        self.val_history: List[Dict[str, float]] = []  # the validation pass after each epoch
        self.refreshes = 0
        self.last_refresh_step: Optional[int] = None
        self.diagnostics: Optional[Dict[str, Any]] = None
        self.plateau: Optional[PlateauPerEpoch] = None
        self._layout_n: Optional[int] = None
        self._sgd = None
        super().__init__(cfg, info, ops)

    @property
    def display_name(self) -> str:
        return "AVAE" if reading(self.opts) == "paper" else f"AVAE ({reading(self.opts)})"

    def build(self):
        c, i = self.cfg, self.info
        return {"ae": None, "vae": AVAE(i.kind, i.shape, c.latent, self.hidden, ops=self.ops,
                                        likelihood=self.likelihood(), kde_floor=self.opts.avae_kde_floor)}

    def stages(self):
        return [Stage("vae", "train", "AVAE", self.cfg.epochs_vae, TERMS),
                Stage("latents", "fit", "latent diagnostics")]

    def sampling_stage(self) -> str:
        return "vae"

    def headline_stage(self):
        return self.stage("vae")

    def objective_units(self) -> str:
        kl = "log10, the code's floored KDE" if self.opts.avae_kde_floor is not None else "nats"
        return f"{self.generative.likelihood.units} + beta * (log q_KDE(z) - log p(z)) ({kl})"

    # -- the data layout: validation part, KDE subset, SGD set -------------------------------------
    def _layout(self, data) -> None:
        from ..errors import ConfigError
        n = len(data.train)
        if self._layout_n == n:
            return
        n_val = min(max(1, int(math.ceil(n * self.opts.avae_val_fraction))), n - 1)
        perm = np.random.default_rng([self.cfg.split_seed % 2 ** 32, VAL_STREAM]).permutation(n)
        self.val_index = np.sort(perm[:n_val])
        self.pool = np.sort(perm[n_val:])
        from ..data.spec import parse_dataset_spec
        kind = parse_dataset_spec(self.cfg.dataset).kind
        m = self.opts.avae_centres
        if m is None:
            m = min(CENTRES.get(kind, DEFAULT_CENTRES_OTHER), len(self.pool) // 2)
            if m < 2:
                raise ConfigError(f"the training set ({n} rows, {n_val} held out for beta) is too small for "
                                  "the AVAE's KDE subset and SGD set")
        if m >= len(self.pool):
            raise ConfigError(f"--avae-centres {m} leaves no rows for the SGD steps: the training set has "
                              f"{n} rows, {n_val} of them held out (--avae-val-fraction "
                              f"{self.opts.avae_val_fraction:g}); choose m < {len(self.pool)}")
        self.m = int(m)
        self._layout_n = n

    def split(self, epoch: int) -> Tuple[np.ndarray, np.ndarray]:
        """(KDE subset, SGD set) of an epoch: training-set row indices, a function of (--seed, epoch)."""
        rng = np.random.default_rng([self.cfg.seed % 2 ** 32, KDE_STREAM, int(epoch)])
        perm = rng.permutation(len(self.pool))
        return np.sort(self.pool[perm[:self.m]]), np.sort(self.pool[perm[self.m:]])

    def split_for(self, data, epoch: int) -> Tuple[np.ndarray, np.ndarray]:
        """`split(epoch)` of this data (the layout computed first)."""
        self._layout(data)
        return self.split(epoch)

    def train_rows(self, stage, data) -> int:
        self._layout(data)
        return len(self.pool) - self.m

    def stage_data(self, stage, split, data):
        if split == "train" and stage.name == "vae":
            if self._sgd is None:
                raise RuntimeError("the AVAE's SGD set is drawn by begin_epoch before an epoch's batches")
            return self._sgd
        return super().stage_data(stage, split, data)

    # -- a fresh run: the bandwidth --------------------------------------------------------------------
    def on_new_run(self, trainer) -> None:
        self._layout(trainer.data)
        latent = self.cfg.latent
        if self.opts.avae_bandwidth is not None:
            self.bw = given_bandwidth(latent, self.m, self.opts.avae_bandwidth)
        else:
            self.bw = bandwidth_for(latent, self.m)
        self.generative.set_bandwidth(self.bw.h_opt, self.bw.h)
        trainer.log(f"AVAE: {len(self.val_index)} validation rows, m = {self.m} KDE centres, "
                    f"{len(self.pool) - self.m} SGD rows per epoch; bandwidth h_opt = {self.bw.h_opt:.4f}, "
                    f"h = {self.bw.h:.4f} ({self.bw.source}); reading: {reading(self.opts)}")

    # -- epoch and step hooks ------------------------------------------------------------------------
    def begin_epoch(self, stage, epoch, trainer) -> None:
        self._layout(trainer.data)
        kde, sgd = self.split(epoch)
        self.kde_index, self.epoch = kde, epoch
        self._sgd = SubsetData(trainer.data.train, sgd)
        if self.beta is None:                       # before epoch 0 (Alg. 1 line 7)
            self.beta = self._initial_beta(trainer)
            self.beta_history.append(self.beta)
        elif self.beta_next is not None:            # recomputed after the last epoch (line 30)
            self.beta, self.beta_next = self.beta_next, None
            self.beta_history.append(self.beta)

    def before_step(self, stage, step, trainer) -> None:
        if step % self.opts.avae_refresh_steps == 0 or self.centres_epoch != self.epoch:
            self.refresh_centres(trainer, step)

    def refresh_centres(self, trainer, step: int) -> None:
        """Re-encode all m centres with the current encoder (eval mode, no grad, batched)."""
        ds = SubsetData(trainer.data.train, self.kde_index)
        self.centres = trainer.encode(self.generative.encode, data=ds).to(trainer.device)
        self.centres_epoch = self.epoch
        self.refreshes += 1
        self.last_refresh_step = int(step)

    def end_epoch(self, stage, epoch, trainer) -> None:
        stats = self._validation(trainer)
        self.val_history.append(stats)
        self.beta_next = self.beta_value if self.beta_kind == "const" else stats[f"beta_{self.beta_kind}"]
        if self.plateau is not None:   # the authors' metric: validation recon + the (unweighted) KL term
            self.plateau.epoch_end(stats["recon"] + stats["kl"])

    def _initial_beta(self, trainer) -> float:
        if self.beta_value is not None:            # const:V, rms:V
            return self.beta_value
        return self._validation(trainer, with_kl=False)[f"beta_{self.beta_kind}"]

    @torch.no_grad()
    def _validation(self, trainer, with_kl: bool = True) -> Dict[str, float]:
        """Means over the validation part: ||x - D(E(x))||_2 (beta_rule), sqrt of the mean squared norm
        (beta_rms), the negative log-likelihood and the KL term with the current centres."""
        model = self.generative
        kl_on = with_kl and self.centres is not None

        def rows(x):
            z = model.encode(x)
            h = model.decoder(z)
            norm = (x - model.likelihood.mean(h)).float().flatten(1).norm(dim=1)
            nll = model.likelihood.nll_rows(h, x).float()
            kl = model.kl_rows(z, self.centres).float() if kl_on else torch.zeros_like(norm)
            return torch.stack([norm, nll, kl], 1)

        v = trainer.encode(rows, data=SubsetData(trainer.data.train, self.val_index)).double()
        return {"beta_rule": float(v[:, 0].mean()), "beta_rms": float(v[:, 0].pow(2).mean().sqrt()),
                "recon": float(v[:, 1].mean()), "kl": float(v[:, 2].mean()) if kl_on else float("nan")}

    def make_scheduler(self, stage, optimizer, steps_per_epoch):
        if self.opts.avae_lr_plateau > 0:
            self.plateau = PlateauPerEpoch(optimizer, self.opts.avae_lr_plateau)
            return self.plateau
        return None

    def loss(self, stage, batch):
        if self.centres is None:
            raise RuntimeError("the AVAE's KDE centres are not encoded yet (before_step encodes them)")
        return self.generative.loss(batch, self.centres, self.beta)

    def epoch_stats(self, stage) -> Dict[str, float]:
        return {"beta": float(self.beta)} if self.beta is not None else {}

    # -- the diagnostics stage -------------------------------------------------------------------------
    def fit(self, stage, trainer) -> None:
        model = self.generative
        z_train = trainer.encode(model.encode, "train")
        z_test = trainer.encode(model.encode, "test")
        self.diagnostics = latent_diagnostics(z_train, z_test, model.h, self.ops)
        trainer.write_json(self.diagnostics, "latent_stats.json")
        tr = self.diagnostics.get("train", {})
        if tr:
            trainer.log(f"AVAE training encodings: covariance eigenvalues "
                        f"{', '.join(f'{v:.3f}' for v in tr['cov_eigenvalues'])} against 1 - h^2 = "
                        f"{self.diagnostics['target_variance']:.3f}; mean norm {tr['mean_norm']:.3f}")

    # -- checkpoint and summary ------------------------------------------------------------------------
    def state(self):
        return {"avae": {
            "centres": None if self.centres is None else self.centres.detach().cpu(),
            "centres_epoch": self.centres_epoch, "epoch": self.epoch,
            "kde_index": None if self.kde_index is None else torch.as_tensor(self.kde_index),
            "beta": self.beta, "beta_next": self.beta_next, "beta_history": list(self.beta_history),
            "val_history": list(self.val_history), "refreshes": self.refreshes,
            "last_refresh_step": self.last_refresh_step,
            "bandwidth": None if self.bw is None else self.bw.to_dict(),
            "diagnostics": self.diagnostics}}

    def load_state(self, ck, path):
        s = ck.get("avae") or {}
        c = s.get("centres")
        self.centres = None if c is None else c.to(self.generative.z_head.weight.device)
        self.centres_epoch, self.epoch = s.get("centres_epoch"), s.get("epoch")
        k = s.get("kde_index")
        self.kde_index = None if k is None else np.asarray(k)
        self.beta, self.beta_next = s.get("beta"), s.get("beta_next")
        self.beta_history = list(s.get("beta_history") or [])
        self.val_history = list(s.get("val_history") or [])
        self.refreshes = int(s.get("refreshes") or 0)
        self.last_refresh_step = s.get("last_refresh_step")
        b = s.get("bandwidth")
        if b is not None:
            self.bw = Bandwidth(b["latent"], b["m"], b["h_opt"], b["h"], b["source"], tuple(b["trials"]),
                                tuple(sorted(b["estimator"].items())))
        self.diagnostics = s.get("diagnostics")

    def to(self, device):
        super().to(device)
        if self.centres is not None:
            self.centres = self.centres.to(device)
        return self

    def reference_models(self):
        return {"normal": NormalSampler(self.generative)}

    def summary(self):
        model = self.generative
        out: Dict[str, Any] = {
            "avae_reading": reading(self.opts), "avae_beta_mode": self.opts.avae_beta,
            "avae_kde_floor": self.opts.avae_kde_floor,
            "bandwidth_h_opt": float(model.bandwidth_opt), "bandwidth_h": float(model.bandwidth),
            "bandwidth_source": None if self.bw is None else self.bw.source,
            "bandwidth": None if self.bw is None else self.bw.to_dict(),
            "sample_variance": 1.0 - float(model.bandwidth) ** 2,
            "avae_centres_used": getattr(self, "m", None),
            "avae_validation_rows": None if self._layout_n is None else int(len(self.val_index)),
            "avae_refresh_steps": self.opts.avae_refresh_steps, "avae_refreshes": self.refreshes,
            "beta_last": self.beta, "beta_after_training": self.beta_next, "beta_history": self.beta_history,
            "latent_diagnostics": self.diagnostics}
        return out
