"""S-IntroVAE with a learned mixture prior ("IntroPrior"; Athanasiadis, Lindsten, Felsberg, "Prior
Learning in Introspective VAEs", TMLR 2025; SPEC-related 1).

The encoder gives q(z|x) = N(mu, diag exp(logvar)), the decoder D is deterministic (its output mapped
to the data range by the `mse` likelihood: a sigmoid on images), and the reconstruction loss is the
summed squared error Lrec(x, y) = sum_p (x_p - y_p)^2 per example. The prior is

    p(z) = sum_i w_i N(z; m_i, diag exp(fc(v_i))),      w = softmax(a)

with M components; `prior` selects the variant (SPEC 1.1, the columns of the paper's Table 1):
  sg     N(0, I) (S-IntroVAE's standard Gaussian prior; nothing to learn);
  fixed  a mixture, learned during the VAE warm-up (first as a VampPrior, then converted), frozen in
         the adversarial game;
  ip     the same mixture also trained in the game (prior-decoder cooperation, "IP").
`weights` is `uniform` (a = 0, fixed) or `learned` (the paper's "LC": a is trained with the prior).

KLs are Monte Carlo estimates with T draws per example (T = 100, SPEC 1.1; for sg the closed form is
equivalent):  LKL(mu, logvar; p) = (1/T) sum_t [log N(z_t; mu, sigma^2) - log p(z_t)], z_t = mu +
sigma eps_t, with log p from the fused `mixture_log_prob`.

Training stages (`IntroPriorRecipe.stages`):
  warm-up  a plain beta-VAE, L = b_rec mean_b Lrec + b_kl mean_b LKL (no scale s): with a VampPrior
           (M pseudo-inputs, their posteriors the components) for the mixture variants, N(0, I) for sg;
  to_mog   the VampPrior becomes the mixture: m_i, v_i = E(u_i), a = log w (an exact carry-over; the
           authors' code loads the softmaxed weights into the logits, `code_parity` reproduces that);
  mog      the last `mog_warmup` warm-up epochs, the same VAE loss with the mixture;
  clip     (ip) the soft-clip range of the prior log-variances is frozen: a_j = min_i v_ij,
           b_j = max_i v_ij, and from then on fc(v) = v - softplus_beta(v - b) + softplus_beta(a - v),
           beta_j = K / (|b_j - a_j| + 1e-8) (Eq. 11), applied wherever the prior is read;
  game     the S-IntroVAE game, two updates per step (`game_encoder_step`, `game_decoder_step`):
    encoder (decoder and prior frozen):
      LE = s (b_rec mean Lrec(x, D(z)) + b_kl mean LKL_real)
         + (1 / alpha) 0.5 [mean_b exp(-alpha s (b_rec Lrec(x_f, D(z_f)) + b_neg LKL(x_f)))
                          + mean_b exp(-alpha s (b_rec Lrec(x_r, D(z_rr)) + b_neg LKL(x_r)))]
         + s r_ent sum_i c_i log(c_i + 1e-8) / log M
      with x_f = D(z_s), z_s ~ p, and x_r = D(z) DETACHED before re-encoding (z_f, z_rr ~ q of them),
      the exponential applied per example before the batch mean, and c the mean responsibilities of
      the real posteriors' MC draws (the negative normalised entropy; the division is skipped for M = 1);
    decoder and prior (encoder frozen; the prior trainable under ip only):
      LDP = s (b_rec mean Lrec(x, x_r) + b_kl mean LKL(mu, logvar; prior LIVE)          [prior as target]
             + gamma b_kl 0.5 (mean LKL(x_r; prior DETACHED) + mean LKL(x_f; prior DETACHED))
             + gamma gamma_r b_rec 0.5 (mean Lrec(x_r.detach(), D(z_rec.detach()))
                                       + mean Lrec(x_f.detach(), D(z_fake.detach()))))
      with x_r = D(z.detach()) (z from the encoder update), a FRESH z_s ~ p drawn with gradient to
      (m, v) by the reparameterisation (the component index is not differentiable) and x_f = D(z_s):
      the prior learns from the real KL as a target and, through z_s, as the source of the fakes.
The gradients are routed as the authors' code routes them, by switching requires_grad on the frozen
parts around each update (tests/test_introprior.py checks every route by autograd).

Generation: i ~ Cat(w), z = m_i + alpha exp(fc(v_i) / 2) eps, x = D(z) (no observation noise).
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from .baseline import BaselineVAE, count, log_normal
from .likelihood import Likelihood
from ..errors import ConfigError
from ..options import ModelOptions, option
from .protocol import ModelRecipe, Stage, Update, register

PRIORS = ("sg", "fixed", "ip")
WEIGHTS = ("uniform", "learned")
PRESETS = ("paper", "code")
PHASE_VAMP, PHASE_MOG = 0, 1
ENTROPY_EPS = 1e-8       # the code's c log(c + 1e-8)

TERMS_WARMUP = ("loss", "recon", "kl")
TERMS_GAME = ("loss", "recon", "kl", "loss_e", "loss_d", "kl_fake", "kl_rec", "exp_elbo_fake",
              "exp_elbo_rec", "resp_entropy")


# -- the adaptive soft clip (Eq. 11 / 53) ---------------------------------------------------------------
def softplus_beta(y: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """log(1 + exp(beta y)) / beta, stable for large beta y."""
    return F.softplus(beta * y) / beta


def soft_clip(v: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, k: float = 10.0) -> torch.Tensor:
    """fc(v) = v - softplus_beta(v - hi) + softplus_beta(lo - v), beta = k / (|hi - lo| + 1e-8), per
    coordinate (lo, hi broadcast over the last dimension); where lo == hi it returns hi. It keeps
    1 - (log 4 - 2 log(1 + e^-k)) / k of the range (0.86138 at k = 10) and is monotone."""
    beta = k / ((hi - lo).abs() + 1e-8)
    clipped = v - softplus_beta(v - hi, beta) + softplus_beta(lo - v, beta)
    return torch.where(lo == hi, hi.expand_as(v), clipped)


def clip_range_kept(k: float) -> float:
    """The share of [lo, hi] that fc maps onto: (fc(hi) - fc(lo)) / (hi - lo)."""
    return 1.0 - (math.log(4.0) - 2.0 * math.log1p(math.exp(-k))) / k


def normalised_entropy(c: torch.Tensor) -> torch.Tensor:
    """-sum_i c_i log c_i / log M of a probability vector (1 for uniform, 0 for one-hot; M = 1: 0)."""
    M = c.shape[-1]
    h = -(c * torch.log(c.clamp_min(1e-30))).sum(-1)
    return h / math.log(M) if M > 1 else h * 0.0


class IntroPriorVAE(BaselineVAE):
    """The S-IntroVAE network with its (learned) prior; the game's two updates and the warm-up loss."""

    mode = "introprior"

    def __init__(self, kind: str, shape: Sequence[int], latent: int, hidden: Sequence[int] = (128, 128),
                 ops=None, likelihood: Optional[Likelihood] = None, prior: str = "ip",
                 weights: str = "learned", components: int = 64, beta_rec: float = 1.0,
                 beta_kl: float = 1.0, beta_neg: float = 1.0, mc: int = 100, alpha: float = 2.0,
                 gamma: float = 1.0, gamma_r: float = 1e-8, entropy: float = 0.0, clip: float = 10.0,
                 scale: Optional[float] = None, code_parity: bool = False):
        if prior not in PRIORS:
            raise ValueError(f"prior must be one of {PRIORS}, got {prior!r}")
        if weights not in WEIGHTS:
            raise ValueError(f"weights must be one of {WEIGHTS}, got {weights!r}")
        for name, v in (("components", components), ("mc", mc)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        super().__init__(kind, shape, latent, hidden, ops, likelihood)
        f = self.body.features
        self.mu_head = nn.Linear(f, latent)
        self.logvar_head = nn.Linear(f, latent)
        self.variant, self.weights_mode = prior, weights
        self.beta_rec, self.beta_kl, self.beta_neg = float(beta_rec), float(beta_kl), float(beta_neg)
        self.mc, self.alpha, self.gamma, self.gamma_r = int(mc), float(alpha), float(gamma), float(gamma_r)
        self.entropy_weight, self.clip_k = float(entropy), float(clip)
        dim = int(torch.Size(self.shape).numel())
        self.scale = float(scale) if scale is not None else 1.0 / dim     # s = 1 / input_dim
        self.code_parity = bool(code_parity)
        C = 1 if prior == "sg" else int(components)
        self.num_components = C
        if prior != "sg":
            # Every parameter of both prior phases exists from the start, so a checkpoint has one
            # layout whatever phase it holds; `phase` says which is live.
            self.pseudo = nn.Parameter(torch.rand(C, *self.shape) if kind == "image" else torch.randn(C, *self.shape))
            self.prior_means = nn.Parameter(torch.zeros(C, latent))
            self.prior_logvars = nn.Parameter(torch.zeros(C, latent))
            if weights == "learned":
                self.vamp_logits = nn.Parameter(torch.zeros(C))
                self.mog_logits = nn.Parameter(torch.zeros(C))
            else:
                self.register_buffer("vamp_logits", torch.zeros(C))
                self.register_buffer("mog_logits", torch.zeros(C))
        self.register_buffer("phase", torch.tensor(PHASE_VAMP if prior != "sg" else PHASE_MOG))
        self.register_buffer("clip_lo", torch.zeros(latent))
        self.register_buffer("clip_hi", torch.zeros(latent))
        self.register_buffer("clip_on", torch.zeros((), dtype=torch.long))

    # -- parts ----------------------------------------------------------------------------------------
    def encoder_parameters(self) -> List[nn.Parameter]:
        return [*self.body.parameters(), *self.mu_head.parameters(), *self.logvar_head.parameters()]

    def decoder_parameters(self) -> List[nn.Parameter]:
        return [*self.decoder.parameters(), *self.likelihood.parameters()]

    def prior_parameters(self, phase: Optional[int] = None) -> List[nn.Parameter]:
        """The trainable parameters of the prior in `phase` (default: the live one)."""
        if self.variant == "sg":
            return []
        phase = int(self.phase) if phase is None else phase
        if phase == PHASE_VAMP:
            ps = [self.pseudo, self.vamp_logits]
        else:
            ps = [self.prior_means, self.prior_logvars, self.mog_logits]
        return [p for p in ps if isinstance(p, nn.Parameter)]

    def param_counts(self) -> Dict[str, int]:
        """Trainable parameters of the network and the live prior phase (the other phase's dormant
        parameters are not counted), and of the prior alone."""
        live = self.encoder_parameters() + self.decoder_parameters() + self.prior_parameters()
        return {"total": count(live), "prior": count(self.prior_parameters())}

    @property
    def is_mixture_phase(self) -> bool:
        return int(self.phase) == PHASE_MOG

    def pseudo_inputs(self) -> torch.Tensor:
        return F.hardtanh(self.pseudo, 0.0, 1.0) if self.kind == "image" else self.pseudo

    # -- encoder --------------------------------------------------------------------------------------
    def encode(self, x: torch.Tensor):
        h = self.body(x)
        return None, self.mu_head(h).float(), self.logvar_head(h).float()

    def _check_x(self, x) -> None:
        if not isinstance(x, torch.Tensor) or x.dim() < 2 or tuple(x.shape[1:]) != self.shape:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x must have shape (B, {', '.join(map(str, self.shape))}), got {got}")

    def recon_rows(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Lrec per example: the squared error summed over an example's entries (B,)."""
        return (x.float() - y.float()).pow(2).flatten(1).sum(1)

    # -- the prior ------------------------------------------------------------------------------------
    def prior_components(self) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(log_weights (C,), means (C, l), log_vars (C, l)) of the live prior, with the soft clip
        applied once its range is frozen; the VampPrior's components are the encoder's posteriors at
        the pseudo-inputs (differentiable in both)."""
        dev = self.mu_head.weight.device
        if self.variant == "sg":
            z = torch.zeros(1, self.latent, device=dev)
            return torch.zeros(1, device=dev), z, z
        if not self.is_mixture_phase:
            _, m, lv = self.encode(self.pseudo_inputs())
            return torch.log_softmax(self.vamp_logits.float(), 0), m, lv
        lv = self.prior_logvars.float()
        if bool(self.clip_on):
            lv = soft_clip(lv, self.clip_lo, self.clip_hi, self.clip_k)
        return torch.log_softmax(self.mog_logits.float(), 0), self.prior_means.float(), lv

    def log_prior(self, z: torch.Tensor, components=None, return_responsibilities: bool = False):
        lw, m, lv = self.prior_components() if components is None else components
        return self.ops.mixture_log_prob(z, lw, m, lv, return_responsibilities=return_responsibilities)

    def sample_prior_z(self, n: int, alpha: float = 1.0, generator=None, components=None,
                       return_index: bool = False):
        """n draws z = m_i + alpha exp(lv_i / 2) eps, i ~ Cat(w): differentiable in the means and
        log-variances by the reparameterisation (the index is not); with return_index also i."""
        lw, m, lv = self.prior_components() if components is None else components
        dev = m.device
        where = generator.device if generator is not None else dev
        idx = torch.multinomial(lw.detach().exp().to(where), n, replacement=True, generator=generator).to(dev)
        eps = torch.randn((n, self.latent), generator=generator, device=where).to(dev)
        z = m[idx] + alpha * torch.exp(0.5 * lv[idx]) * eps
        return (z, idx) if return_index else z

    def sample_latent(self, n: int, alpha: float = 1.0, generator=None) -> torch.Tensor:
        with torch.no_grad():
            return self.sample_prior_z(n, alpha, generator)

    # -- the Monte Carlo KL ---------------------------------------------------------------------------
    def mc_kl(self, mu: torch.Tensor, logvar: torch.Tensor, components=None,
              return_responsibilities: bool = False):
        """LKL per example (B,) with T = `mc` draws z_t = mu + sigma eps_t; with
        return_responsibilities also the mean responsibilities (C,) of the B T draws (for the entropy
        term; they share the draws, SPEC 1.1 allows it)."""
        T = self.mc
        B, l = mu.shape
        std = torch.exp(0.5 * logvar)
        eps = torch.randn((T, B, l), device=mu.device, dtype=mu.dtype)
        z = (mu.unsqueeze(0) + std.unsqueeze(0) * eps).reshape(T * B, l)     # row t B + b, as the code
        log_q = log_normal(z.view(T, B, l), mu.unsqueeze(0), logvar.unsqueeze(0))     # (T, B)
        out = self.log_prior(z, components, return_responsibilities)
        log_p, resp = (out if return_responsibilities else (out, None))
        kl = (log_q - log_p.view(T, B)).mean(0)
        return (kl, resp.mean(0)) if return_responsibilities else kl

    # -- the warm-up VAE ------------------------------------------------------------------------------
    def reparameterize(self, mu, logvar):
        return mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)

    def warmup_loss(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """The beta-VAE of the warm-up: b_rec mean Lrec + b_kl mean LKL (no scale s)."""
        self._check_x(x)
        _, mu, logvar = self.encode(x)
        z = self.reparameterize(mu, logvar)
        recon = self.recon_rows(x, self.decode(z)).mean()
        kl = self.mc_kl(mu, logvar).mean()
        return {"loss": self.beta_rec * recon + self.beta_kl * kl, "recon": recon, "kl": kl}

    # -- the game -------------------------------------------------------------------------------------
    def game_encoder_step(self, x: torch.Tensor) -> Tuple[Dict[str, torch.Tensor], Tuple]:
        """LE and its parts; also (z, mu, logvar) detached for the decoder update. The caller freezes
        the decoder and prior (requires_grad) around the backward (`frozen`)."""
        self._check_x(x)
        s, a = self.scale, self.alpha
        B = x.shape[0]
        comps = self.prior_components()
        _, mu, logvar = self.encode(x)
        z = self.reparameterize(mu, logvar)
        x_r = self.decode(z)
        with torch.no_grad():
            z_s = self.sample_prior_z(B, components=tuple(t.detach() for t in comps))
        x_f = self.decode(z_s)
        _, mu_f, lv_f = self.encode(x_f.detach())
        x_ff = self.decode(self.reparameterize(mu_f, lv_f))
        _, mu_rr, lv_rr = self.encode(x_r.detach())
        x_rrr = self.decode(self.reparameterize(mu_rr, lv_rr))
        kl_real, c = self.mc_kl(mu, logvar, comps, return_responsibilities=True)
        kl_real = kl_real.mean()
        kl_f = self.mc_kl(mu_f, lv_f, comps)              # per example
        kl_rr = self.mc_kl(mu_rr, lv_rr, comps)
        rec_f = self.recon_rows(x_f, x_ff)                # the code keeps x_r's graph in this target
        rec_rr = self.recon_rows(x_r, x_rrr)
        recon = self.recon_rows(x, x_r).mean()
        exp_fake = torch.exp(-a * s * (self.beta_rec * rec_f + self.beta_neg * kl_f)).mean()
        exp_rec = torch.exp(-a * s * (self.beta_rec * rec_rr + self.beta_neg * kl_rr)).mean()
        neg_entropy = (c * torch.log(c + ENTROPY_EPS)).sum()
        if self.num_components > 1:
            neg_entropy = neg_entropy / math.log(self.num_components)
        loss_e = (s * (self.beta_kl * kl_real + self.beta_rec * recon) + (1.0 / a) * 0.5 * (exp_fake + exp_rec)
                  + s * self.entropy_weight * neg_entropy)
        terms = {"loss": self.beta_rec * recon + self.beta_kl * kl_real, "recon": recon, "kl": kl_real,
                 "loss_e": loss_e, "exp_elbo_fake": exp_fake, "exp_elbo_rec": exp_rec,
                 "resp_entropy": normalised_entropy(c.detach())}
        return terms, (z.detach(), mu.detach(), logvar.detach())

    def game_decoder_step(self, x: torch.Tensor, z: torch.Tensor, mu: torch.Tensor,
                          logvar: torch.Tensor, record: Optional[dict] = None) -> Dict[str, torch.Tensor]:
        """LDP from the encoder update's (z, mu, logvar), detached. The caller freezes the encoder
        (and the prior unless it is trained in the game) around the backward. `record` (a dict, for
        the gradient-routing tests) receives the fakes' latents z_s and their component indices."""
        s = self.scale
        B = x.shape[0]
        comps = self.prior_components()
        target = tuple(t.detach() for t in comps)          # the prior as a target of the fakes' KLs
        z_s, idx = self.sample_prior_z(B, components=comps, return_index=True)   # ... and as the source
        if record is not None:
            record.update(z_s=z_s, index=idx, components=comps)
        x_f = self.decode(z_s)
        x_r = self.decode(z)
        recon = self.recon_rows(x, x_r).mean()
        _, mu_r, lv_r = self.encode(x_r)
        _, mu_f, lv_f = self.encode(x_f)
        z_rec = self.reparameterize(mu_r, lv_r)
        z_fake = self.reparameterize(mu_f, lv_f)
        rec_rr = self.recon_rows(x_r.detach(), self.decode(z_rec.detach())).mean()
        rec_ff = self.recon_rows(x_f.detach(), self.decode(z_fake.detach())).mean()
        kl_rec = self.mc_kl(mu_r, lv_r, target).mean()
        kl_fake = self.mc_kl(mu_f, lv_f, target).mean()
        kl_real = self.mc_kl(mu, logvar, comps).mean()      # the prior as the target of the real data
        loss_d = s * (self.beta_rec * recon + self.beta_kl * kl_real
                      + self.gamma * self.beta_kl * 0.5 * (kl_rec + kl_fake)
                      + self.gamma * self.gamma_r * self.beta_rec * 0.5 * (rec_rr + rec_ff))
        if record is not None:
            record.update(recon=recon, kl_real=kl_real, rec_rr=rec_rr, rec_ff=rec_ff)
        return {"loss_d": loss_d, "kl_fake": kl_fake, "kl_rec": kl_rec}

    @contextlib.contextmanager
    def trainable(self, params: Iterable[nn.Parameter]):
        """Only `params` require grad inside the block (the code's requires_grad switching); restores
        every parameter's flag afterwards."""
        keep = {id(p) for p in params}
        flags = [(p, p.requires_grad) for p in self.parameters()]
        try:
            for p, _ in flags:
                p.requires_grad_(id(p) in keep)
            yield
        finally:
            for p, f in flags:
                p.requires_grad_(f)

    def game_updates(self, x: torch.Tensor, train_prior: bool) -> Iterator[Update]:
        """The two updates of a game step: the encoder's, then the decoder's and the prior's."""
        with self.trainable(self.encoder_parameters()):
            terms_e, (z, mu, logvar) = self.game_encoder_step(x)
            yield Update(("encoder",), terms_e["loss_e"], terms_e)
        dp = self.decoder_parameters() + (self.prior_parameters() if train_prior else [])
        with self.trainable(dp):
            terms_d = self.game_decoder_step(x, z, mu, logvar)
            yield Update(("decoder", "prior") if train_prior else ("decoder",), terms_d["loss_d"], terms_d)

    def game_terms(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Every game term without updating anything (evaluation)."""
        terms_e, saved = self.game_encoder_step(x)
        return {**terms_e, **self.game_decoder_step(x, *saved)}

    # -- interface ------------------------------------------------------------------------------------
    def loss(self, x: torch.Tensor, generator=None) -> Dict[str, torch.Tensor]:
        return self.warmup_loss(x)

    def forward(self, x: torch.Tensor, generator=None) -> Dict[str, torch.Tensor]:
        self._check_x(x)
        _, mu, logvar = self.encode(x)
        # the generator's draw when given (repeatable reconstructions); the global RNG otherwise
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        z = mu + torch.exp(0.5 * logvar) * eps
        return {"xhat": self.decode(z), "z": z, "mu": mu, "logvar": logvar, "logits": None}

    # -- stage transitions ----------------------------------------------------------------------------
    @torch.no_grad()
    def vamp_to_mog(self) -> Dict[str, float]:
        """Convert the VampPrior into the mixture: m_i, v_i = E(u_i), a = log w (exact; with
        code_parity the softmaxed weights are loaded into the logits, as the authors' code does).
        Returns the largest |log p_vamp(z) - log p_mog(z)| at 256 random z (0 up to rounding unless
        code_parity changes learned weights)."""
        if self.variant == "sg":
            raise RuntimeError("the sg prior has no VampPrior to convert")
        was = self.training
        self.eval()
        try:
            lw_v, m, lv = self.prior_components()
            w = lw_v.exp()
            g = torch.Generator().manual_seed(0)     # a local stream: the training RNG stays untouched
            idx = torch.multinomial(w.cpu(), 256, replacement=True, generator=g).to(m.device)
            z = m[idx] + torch.exp(0.5 * lv[idx]) * torch.randn(256, self.latent, generator=g).to(m.device)
            before = self.log_prior(z, (lw_v, m, lv))
            self.prior_means.copy_(m)
            self.prior_logvars.copy_(lv)
            self.mog_logits.copy_(w if (self.code_parity and self.weights_mode == "learned") else lw_v)
            self.phase.fill_(PHASE_MOG)
            after = self.log_prior(z)
        finally:
            self.train(was)
        return {"max_abs_log_prob_change": float((after - before).abs().max())}

    @torch.no_grad()
    def freeze_clip_range(self) -> Dict[str, List[float]]:
        """a_j = min_i v_ij, b_j = max_i v_ij of the unclipped log-variances, frozen; the clip is on."""
        lv = self.prior_logvars.float()
        self.clip_lo.copy_(lv.min(0).values)
        self.clip_hi.copy_(lv.max(0).values)
        self.clip_on.fill_(1)
        return {"clip_lo": self.clip_lo.tolist(), "clip_hi": self.clip_hi.tolist(), "k": self.clip_k}


# -- per dataset defaults (SPEC-related 1.2) ----------------------------------------------------------
# beta (rec, kl, neg) of the 2-D sets: the paper's grid values, and the authors' code configs
BETAS_2D = {"paper": {"8gaussians": (0.2, 0.3, 0.9), "2spirals": (0.2, 0.05, 0.2),
                      "checkerboard": (0.05, 0.2, 0.8), "rings": (0.2, 0.2, 0.6)},
            "code": {"8gaussians": (0.2, 0.3, 0.9), "2spirals": (0.2, 0.5, 1.0),
                     "checkerboard": (0.2, 0.1, 0.2), "rings": (0.2, 0.2, 1.0)}}
TOY_KINDS = tuple(BETAS_2D["paper"])
# b_neg per image kind (S-IntroVAE: MNIST 128 in the code; FMNIST, CIFAR 256); digits: of the order
# of the latent size (SPEC 1.2 "Digits (ours)", after Daniel & Tamar), 32 measured
IMAGE_BETA_NEG = {"digits": 32.0, "mnist": 128.0, "celeba": 256.0, "images": 256.0}
# b_rec on the 8x8 digits: with b_rec = b_kl = 1 the summed squared error of 64 pixels in [0, 1] is
# too weak a likelihood and the warm-up VAE collapses (KL 0.004, every sample the same image; FD-LeNet
# 1219); b_rec 20 keeps the posterior informative (KL 12.6, recognisable digits), measured
IMAGE_BETA_REC = {"digits": 20.0}
COMPONENTS = {"digits": 10, "mnist": 100, "celeba": 100, "images": 100, "clusters": 3, "npy": 10}


GAME_EPOCHS = {"digits": 60, "mnist": 200, "celeba": 200, "images": 200, **{k: 700 for k in TOY_KINDS}}
MOG_WARMUP = {"digits": 5, "mnist": 5, "celeba": 5, "images": 5, **{k: 3 for k in TOY_KINDS}}
MILESTONES = {k: [10000, 15000] for k in TOY_KINDS}     # the 2-D code's MultiStepLR (steps)


@dataclasses.dataclass
class IntroPriorOptions(ModelOptions):
    introprior_prior: str = option("ip", "sg: N(0, I); fixed: a mixture learned in the VAE warm-up "
                                   "(VampPrior, then converted), frozen in the game; ip: the mixture also "
                                   "trained in the game (prior-decoder cooperation)", choices=PRIORS)
    introprior_weights: str = option("learned", "mixture weights: uniform, or learned (the paper's LC)",
                                     choices=WEIGHTS)
    introprior_components: Optional[int] = option(
        None, "mixture components M", type="int", metavar="M", minimum=1,
        per_dataset={**{k: 64 for k in TOY_KINDS}, **COMPONENTS, "*": 10})
    introprior_mog_warmup: Optional[int] = option(
        None, "the last E warm-up epochs use the converted mixture instead of the VampPrior", type="int",
        metavar="E", minimum=0, default_text="2-D sets 3, images 5, at most --epochs-vae")
    epochs_game: Optional[int] = option(
        None, "epochs of the adversarial game after the --epochs-vae warm-up (0: the warm-up VAE alone)",
        type="int", metavar="N", minimum=0, per_dataset={**GAME_EPOCHS, "*": 60})
    introprior_beta_rec: Optional[float] = option(
        None, "b_rec", type="float", metavar="B", minimum=0,
        default_text="2-D sets per --introprior-preset, digits 20, else 1")
    introprior_beta_kl: Optional[float] = option(
        None, "b_kl", type="float", metavar="B", minimum=0, default_text="2-D sets per --introprior-preset, "
        "else 1")
    introprior_beta_neg: Optional[float] = option(
        None, "b_neg, the fake KL's weight in the encoder loss and the stability knob", type="float",
        metavar="B", minimum=0, default_text="2-D sets per --introprior-preset, digits 32, mnist 128, "
        "celeba/images 256, else 1")
    introprior_preset: str = option("paper", "2-D betas: the paper's grid values or the authors' code "
                                    "configs", choices=PRESETS)
    introprior_mc: int = option(100, "Monte Carlo draws per KL", metavar="T", minimum=1)
    introprior_alpha: float = option(2.0, "alpha of the exponential ELBO", metavar="A", above=0)
    introprior_gamma: float = option(1.0, "gamma, the fakes' KL weight in the decoder loss", metavar="G",
                                     minimum=0)
    introprior_gamma_r: float = option(1e-8, "gamma_r, the fakes' reconstruction weight in the decoder "
                                       "loss", metavar="G", minimum=0)
    introprior_entropy: float = option(0.0, "r_ent, weight of the responsibility-entropy term", metavar="R",
                                       minimum=0)
    introprior_clip: float = option(10.0, "K of the adaptive soft clip of the prior log-variances under ip "
                                    "(0: no clip)", metavar="K", minimum=0)
    introprior_scale: Optional[float] = option(None, "s, the game's loss scale", type="float", metavar="S",
                                               above=0, optional=True, default_text="1 / input size")
    introprior_lr_prior: Optional[float] = option(None, "the prior's Adam learning rate", type="float",
                                                  metavar="LR", above=0, optional=True, default_text="--lr")
    introprior_milestones: Optional[List[int]] = option(
        None, "learning rate x0.1 at these global steps", type="ints", metavar="S1,S2", optional=True,
        per_dataset=MILESTONES, default_text="2-D sets 10000,15000 as the code; none elsewhere")
    introprior_code_parity: bool = option(False, "convert the VampPrior's learned weights as the authors' "
                                          "code does (softmaxed weights loaded as logits) instead of "
                                          "exactly", bool_flag="store_true")

    def finish(self, cfg, kind):
        ch = {}
        if self.introprior_mog_warmup is None:     # the default never exceeds a shortened warm-up
            ch["introprior_mog_warmup"] = min(MOG_WARMUP.get(kind, 5), cfg.epochs_vae)
        if kind in TOY_KINDS:
            b = BETAS_2D[self.introprior_preset][kind]
        else:
            b = (IMAGE_BETA_REC.get(kind, 1.0), 1.0, IMAGE_BETA_NEG.get(kind, 1.0))
        for name, v in zip(("introprior_beta_rec", "introprior_beta_kl", "introprior_beta_neg"), b):
            if getattr(self, name) is None:
                ch[name] = v
        opts = self.replace(**ch)
        ms = opts.introprior_milestones
        if ms is not None and not (all(m > 0 for m in ms) and ms == sorted(ms)):
            raise ConfigError(f"--introprior-milestones must be increasing positive step counts, got {ms!r}")
        if cfg.epochs_vae + opts.epochs_game == 0:
            raise ConfigError("--epochs-vae 0 and --epochs-game 0 leave nothing to train; give the warm-up "
                              "or the game at least one epoch")
        if opts.introprior_prior != "sg" and opts.introprior_mog_warmup > cfg.epochs_vae:
            raise ConfigError(f"--introprior-mog-warmup {opts.introprior_mog_warmup} is longer than the warm-up "
                              f"(--epochs-vae {cfg.epochs_vae}): the mixture warm-up is the last part of it")
        if opts.introprior_prior == "sg" and opts.introprior_weights == "learned":
            opts = opts.replace(introprior_weights="uniform")     # one component: nothing to weight
        if cfg.lr_schedule != "none":
            raise ConfigError("--model introprior has its own step schedule (--introprior-milestones, "
                              "MultiStepLR x0.1 as the paper); --lr-schedule must be none")
        return opts


@register
class IntroPriorRecipe(ModelRecipe):
    """S-IntroVAE with a learned prior (paper 001): the warm-up VAE stages, the VampPrior-to-mixture
    conversion and the clip freeze (fit stages), then the adversarial game (two updates per step,
    three optimizers and schedulers)."""

    name = "introprior"
    title = "S-IntroVAE (learned prior)"
    Options = IntroPriorOptions
    likelihoods = ("mse",)
    likelihood_reason = "its reconstruction loss is the summed squared error, S-IntroVAE's Lrec"
    learned_prior = True
    supports_distributed = False
    distributed_reason = ("the game's responsibility-entropy term and per-example exponentials are "
                          "computed on the whole batch and its two updates per step are not wrapped "
                          "for DistributedDataParallel")
    # paper-scale latent sizes (SPEC 1.2): MNIST 32, CIFAR 128; 20 VAE epochs (5 of them with the
    # mixture), then the game to 220. The 2-D sets (20,480 training points, 40 steps of 512 per epoch):
    # the paper's 2,000 warm-up iterations (100 with the mixture) and 28,000 game iterations.
    dataset_defaults = {"mnist": {"latent": 32, "epochs_vae": 20},
                        "celeba": {"latent": 128, "epochs_vae": 20},
                        "images": {"latent": 128, "epochs_vae": 20},
                        "digits": {"epochs_vae": 20},
                        **{k: {"epochs_vae": 50} for k in TOY_KINDS}}

    def __init__(self, cfg, info, ops=None):
        self.fit_reports: Dict[str, object] = {}
        super().__init__(cfg, info, ops)

    @property
    def display_name(self) -> str:
        o = self.opts
        prior = {"sg": "SG", "fixed": "MoG fixed", "ip": "MoG IP"}[o.introprior_prior]
        w = "" if o.introprior_prior == "sg" else (" LC" if o.introprior_weights == "learned" else " uniform")
        return f"S-IntroVAE ({prior}{w})" if o.epochs_game else f"VAE ({prior}{w}, the warm-up only)"

    def build(self):
        c, o, i = self.cfg, self.opts, self.info
        model = IntroPriorVAE(i.kind, i.shape, c.latent, self.hidden, ops=self.ops, likelihood=self.likelihood(),
                              prior=o.introprior_prior, weights=o.introprior_weights,
                              components=o.introprior_components, beta_rec=o.introprior_beta_rec,
                              beta_kl=o.introprior_beta_kl, beta_neg=o.introprior_beta_neg, mc=o.introprior_mc,
                              alpha=o.introprior_alpha, gamma=o.introprior_gamma, gamma_r=o.introprior_gamma_r,
                              entropy=o.introprior_entropy, clip=o.introprior_clip, scale=o.introprior_scale,
                              code_parity=o.introprior_code_parity)
        return {"ae": None, "vae": model}

    # -- stages ---------------------------------------------------------------------------------------
    def stages(self) -> List[Stage]:
        c, o = self.cfg, self.opts
        out: List[Stage] = []
        if o.introprior_prior == "sg":
            out.append(Stage("warmup", "train", "VAE", c.epochs_vae, TERMS_WARMUP))
        else:
            vamp = c.epochs_vae - o.introprior_mog_warmup
            if vamp > 0:
                out.append(Stage("warmup", "train", "VAE (VampPrior)", vamp, TERMS_WARMUP))
            out.append(Stage("to_mog", "fit", "VampPrior to mixture"))
            if o.introprior_mog_warmup > 0:
                out.append(Stage("mog_warmup", "train", "VAE (mixture)", o.introprior_mog_warmup, TERMS_WARMUP))
            if o.introprior_prior == "ip" and o.introprior_clip > 0 and o.epochs_game > 0:
                out.append(Stage("clip", "fit", "clip range"))
        if o.epochs_game > 0:
            out.append(Stage("game", "train", "game", o.epochs_game, TERMS_GAME))
        return out

    def _optimizer(self, params, lr):
        return torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999))

    def make_optimizer(self, stage):
        from .optimizers import OptimizerSet
        m, c = self.generative, self.cfg
        lr_p = self.opts.introprior_lr_prior or c.lr
        opts = {"encoder": self._optimizer(m.encoder_parameters(), c.lr),
                "decoder": self._optimizer(m.decoder_parameters(), c.lr)}
        if stage.name == "game":
            prior = m.prior_parameters(PHASE_MOG) if self.opts.introprior_prior == "ip" else []
        elif stage.name == "warmup" and self.opts.introprior_prior != "sg":
            prior = m.prior_parameters(PHASE_VAMP)
        elif stage.name == "mog_warmup":
            prior = m.prior_parameters(PHASE_MOG)
        else:
            prior = []
        if prior:
            opts["prior"] = self._optimizer(prior, lr_p)
        return OptimizerSet(opts)

    def _stage_start_step(self, stage, steps_per_epoch: int) -> int:
        start = 0
        for s in self.stages():
            if s.name == stage.name:
                return start
            if s.kind == "train":
                start += s.epochs * steps_per_epoch
        raise KeyError(stage.name)

    def make_scheduler(self, stage, optimizer, steps_per_epoch):
        """MultiStepLR x0.1 at the global steps --introprior-milestones (the code's (10k, 15k) on 2-D),
        counted over every train stage, so a stage starting after a milestone starts decayed."""
        from .optimizers import SchedulerSet
        ms = list(self.opts.introprior_milestones or [])
        start = self._stage_start_step(stage, steps_per_epoch)

        def factor(t, ms=ms, start=start):
            return 0.1 ** sum(1 for m in ms if m <= start + t)
        return SchedulerSet({k: torch.optim.lr_scheduler.LambdaLR(o, factor)
                             for k, o in optimizer.optimizers.items()})

    def train_updates(self, stage, batch):
        if stage.name != "game":
            return None
        return self.generative.game_updates(batch, train_prior=self.opts.introprior_prior == "ip")

    def loss(self, stage, batch):
        m = self.generative
        if stage.name == "game":
            return m.game_terms(batch)
        return m.warmup_loss(batch)

    def on_new_run(self, trainer) -> None:
        """The VampPrior's pseudo-inputs start at random training examples (the 2-D code's 'data'
        initialisation), drawn with a generator of the run's seed."""
        m = self.generative
        if m.variant == "sg":
            return
        n = len(trainer.data.train)
        g = torch.Generator().manual_seed(self.cfg.seed)
        idx = torch.randperm(n, generator=g)[:m.num_components]
        if idx.numel() < m.num_components:
            idx = torch.randint(0, n, (m.num_components,), generator=g)
        x = trainer.data.train.get_batch(idx)
        with torch.no_grad():
            m.pseudo.copy_(x.to(m.pseudo.device))

    def fit(self, stage, trainer) -> None:
        m = self.generative
        if stage.name == "to_mog":
            report = m.vamp_to_mog()
            trainer.log(f"VampPrior converted to a {m.num_components}-component mixture (max |change of "
                        f"log p| at random z: {report['max_abs_log_prob_change']:.3g}"
                        + (", code parity: softmaxed weights loaded as logits" if m.code_parity else "") + ")")
        elif stage.name == "clip":
            report = m.freeze_clip_range()
            trainer.log(f"prior log-variance clip range frozen (K = {m.clip_k:g})")
        else:
            raise KeyError(stage.name)
        self.fit_reports[stage.name] = report

    def sampling_stage(self) -> str:
        return [s.name for s in self.stages() if s.kind == "train"][-1]

    def objective_units(self) -> str:
        return "b_rec x squared error (sum over an example's entries) + b_kl x Monte Carlo KL (nats)"

    def state(self):
        return {"introprior_fits": dict(self.fit_reports)}

    def load_state(self, ck, path):
        self.fit_reports = dict(ck.get("introprior_fits") or {})

    def epoch_stats(self, stage):
        m = self.generative
        if m.variant == "sg":
            return {}
        with torch.no_grad():
            lw, _, lv = m.prior_components()
        lw, lv = lw.detach(), lv.detach()
        return {"prior_logvar_max": float(lv.max()), "prior_logvar_min": float(lv.min()),
                "prior_weight_entropy": float(normalised_entropy(lw.exp()))}

    def summary(self):
        m = self.generative
        return {"introprior": {"prior": self.opts.introprior_prior, "weights": self.opts.introprior_weights,
                               "components": m.num_components, "beta_rec": m.beta_rec, "beta_kl": m.beta_kl,
                               "beta_neg": m.beta_neg, "scale": m.scale, "mc": m.mc, "alpha": m.alpha,
                               "gamma": m.gamma, "gamma_r": m.gamma_r, "entropy": m.entropy_weight,
                               "clip_k": m.clip_k, "preset": self.opts.introprior_preset,
                               "code_parity": m.code_parity, "fits": self.fit_reports}}

