"""The Unscented Autoencoder (UAE; Janjos et al., ICML 2023) and its ablation family (SPEC-related 3).

The encoder gives a diagonal posterior N(mu, diag(sigma^2)), sigma = exp(logvar / 2). Per example the
loss decodes K latents z_k, D(z) = likelihood.mean(decoder(z)) (the data-space mean: a sigmoid for
images), and adds a regulariser and, for some variants, a decoder gradient penalty:

  variant   latents z_k                      reconstruction            regulariser      penalty
  vae       mu + sigma eps_k, eps ~ N(0, I)  per sample (mean_k err_k) beta KL           -
  utvae     K sigma points (heuristic)       of the mean image         beta KL           -
  vae-w     mu + sigma eps_k                 per sample                Wasserstein       -
  utvae-w   K sigma points                   of the mean image         Wasserstein       -
  uae       K sigma points                   of the mean image         Wasserstein       GP
  rae-gp    z = mu (K ignored)               of D(mu)                  beta ||mu||^2     GP (no sigma)

The two forms (`form`) differ in reductions and norms (SPEC 3.1; the authors' code tuned the weights
for "code", which is the default):

  "code" (the authors' code, `VanillaVAE.loss_function`):
    recon = mean over batch and pixels of the squared error (MSE mean; per sample also over k);
    W reg = beta * mean_b( ||diag(sigma) + 1e-6 11^T - I||_F + ||mu||_2 )     (both norms UNSQUARED;
            the 1e-6 is added to every entry of the n x n matrix, as in the code; computed in closed
            form: sqrt(sum_i (sigma_i + 1e-6 - 1)^2 + n (n - 1) 1e-12));
    GP    = gamma * mean_b( min(max_i sigma_i^2, 100) * ||g_b||_2 )             (unsquared);
  "paper" (Eqs. 8, 9, 11, 12, 20):
    recon = mean_b sum_p squared error (per sample: also averaged over k);
    W reg = beta * mean_b( ||mu||^2 + sum_i (sigma_i - 1)^2 )                    (Eq. 20, squared);
    GP    = gamma * mean_b( max_i sigma_i^2 * ||g_b||_2^2 ).
  Both forms: the KL variants use beta * mean_b KL(N(mu, sigma^2) || N(0, I)) (the closed form, half
  of the paper's Eq. 10); rae-gp uses beta * mean_b ||mu||^2 (squared, Eq. 16) and a penalty without
  the sigma factor, gamma * mean_b ||g_b||_2 (code) or ||g_b||_2^2 (paper).
Here g = d/dmu sum_p D(mu)_p (a VJP with ones, the gradient of the summed output, not the Jacobian
norm) from a re-decode of D(mu) with create_graph=True, so the penalty trains by double backward.
With batch norm in the decoder (arch "paper", train mode) the examples of a batch interact, so g_b
then also carries the cross-example terms, as in the authors' code.
Defaults: beta = 2.5e-4 (1e-4 for rae-gp), gamma = 1e-6, kappa = 1e-3, K = `points` = 8.

Random draws (eps of shape (B, K, n) for the vae variants, the index selection for the sigma-point
variants) use the `generator` given to `loss` / `forward`, else the global torch RNG.

Generation is ex post (SPEC 3.1): `fit_expost` fits a full-covariance Gaussian mixture (sklearn, 10
components) on the training set's posterior means and stores it in buffers (so a state_dict carries
the fit); `generate` decodes its samples, D(z) with no pixel noise. Reconstruction is D(mu);
`interpolate` decodes the spherical interpolation of two batches' posterior means.

Architectures (`arch`): "library" (the library's body and decoder, models.architectures) or "paper"
(SPEC 3.2, 32x32 and 64x64 images; `PaperEncoder` / `PaperDecoder` below), with raw decoder outputs
whose sigmoid (the likelihood's mean) replaces the paper's tanh since our pixels lie in [0, 1].
"""
from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Any, Dict, Optional, Sequence

import torch
from torch import nn

from .sigma_points import SIGMA_HEURISTICS, _check_kappa, _gather_points, select_sigma_indices
from .baseline import BaselineVAE, check_routing
from .likelihood import Likelihood
from ..errors import ConfigError
from ..options import ModelOptions, option
from .protocol import ModelRecipe, Stage, register
from ..shard import randn_rows

UAE_VARIANTS = ("vae", "utvae", "vae-w", "utvae-w", "uae", "rae-gp")
UAE_FORMS = ("code", "paper")
UAE_ARCHS = ("library", "paper")
SIGMA_POINT_VARIANTS = ("utvae", "utvae-w", "uae")     # z_k are sigma points, recon of the mean image
NOISE_VARIANTS = ("vae", "vae-w")                      # z_k = mu + sigma eps_k, per-sample recon
KL_VARIANTS = ("vae", "utvae")
W_VARIANTS = ("vae-w", "utvae-w", "uae")
GP_VARIANTS = ("uae", "rae-gp")
PAPER_SIZES = (32, 64)

CODE_EPS = 1e-6          # the code's 1e-6 * 11^T inside the Frobenius norm
CODE_SIGMA2_CAP = 100.0  # the code's min(max_i sigma_i^2, 100) in the penalty weight


# -- the regularisers, per row ---------------------------------------------------------------------
def kl_standard_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag(exp(logvar))) || N(0, I)) per row (B,)."""
    return 0.5 * (mu.pow(2) + torch.exp(logvar) - 1.0 - logvar).sum(-1)


def wasserstein_code(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """||diag(sigma) + 1e-6 11^T - I||_F + ||mu||_2 per row (B,), both norms unsquared (the code).
    The n x n matrix is not built: its diagonal is sigma + 1e-6 - 1, its n (n - 1) other entries 1e-6.
    The offset keeps the norm (and its gradient) away from the sqrt's kink at sigma = 1."""
    n = mu.shape[-1]
    sigma = torch.exp(0.5 * logvar)
    fro2 = (sigma + CODE_EPS - 1.0).pow(2).sum(-1) + n * (n - 1) * CODE_EPS ** 2
    return torch.sqrt(fro2) + torch.linalg.vector_norm(mu, dim=-1)


def wasserstein_paper(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """||mu||^2 + sum_i (sigma_i - 1)^2 per row (B,) (Eq. 20 plus the mean term: the squared
    2-Wasserstein distance to N(0, I) for a diagonal posterior). No log barrier as sigma -> 0."""
    sigma = torch.exp(0.5 * logvar)
    return mu.pow(2).sum(-1) + (sigma - 1.0).pow(2).sum(-1)


# -- the paper's architecture (SPEC 3.2) -------------------------------------------------------------
def _check_paper_shape(kind: str, shape: Sequence[int]) -> None:
    shape = tuple(shape)
    if kind != "image" or len(shape) != 3 or shape[1] != shape[2] or shape[1] not in PAPER_SIZES:
        raise ValueError(f"arch 'paper' takes (C, 32, 32) or (C, 64, 64) images, got kind {kind!r} "
                         f"with shape {shape}; use arch 'library'")


class PaperEncoder(nn.Module):
    """6 x [Conv 3x3 s2 p1, BN, LeakyReLU], channels 32-64-128-256-512-1024, flattened to 1024
    features. A 3x3 s2 p1 conv maps H to ceil(H / 2) and keeps 1x1 at 1x1, so the same six layers
    reach 1x1 for 32x32 (after five; the sixth acts on 1x1, as in the paper) and for 64x64 (after
    six): no extra layer or pooling is needed."""

    widths = (32, 64, 128, 256, 512, 1024)

    def __init__(self, shape: Sequence[int]):
        super().__init__()
        mods, c = [], shape[0]
        for w in self.widths:
            mods += [nn.Conv2d(c, w, 3, 2, 1), nn.BatchNorm2d(w), nn.LeakyReLU()]
            c = w
        self.net = nn.Sequential(*mods, nn.Flatten())
        self.features = c

    def forward(self, x):
        return self.net(x)


class PaperDecoder(nn.Module):
    """FC n -> 1024 * 8 * 8, then TConv 4x4 s2 p1 + BN + LeakyReLU 1024-512-256 (8 -> 32; one more,
    256 -> 128, for 64x64 as for CelebA), then TConv 3x3 p1 to C. Raw output (no tanh)."""

    def __init__(self, latent: int, shape: Sequence[int]):
        super().__init__()
        c, size = shape[0], shape[1]
        widths = [1024, 512, 256] + ([128] if size == 64 else [])
        self.fc = nn.Linear(latent, 1024 * 8 * 8)
        mods = []
        for i, o in zip(widths[:-1], widths[1:]):
            mods += [nn.ConvTranspose2d(i, o, 4, 2, 1), nn.BatchNorm2d(o), nn.LeakyReLU()]
        mods.append(nn.ConvTranspose2d(widths[-1], c, 3, 1, 1))
        self.net = nn.Sequential(*mods)

    def forward(self, z):
        return self.net(self.fc(z).view(z.shape[0], 1024, 8, 8))


def _device_of(generator, fallback: torch.device) -> torch.device:
    return generator.device if generator is not None else fallback


# -- the model --------------------------------------------------------------------------------------
class UnscentedAE(BaselineVAE):
    """The UAE family (see the module docstring for the variants and the two loss forms)."""
    interpolates = True        # interpolate(x1, x2, t): evaluate scores the interpolation FD

    mode = "uae"
    interpolation = "slerp"      # how codes are interpolated (`interpolate`, xvae_fast.load's model)
    TERMS = ("loss", "recon", "reg", "gp")
    requires_expost_fit = True     # samples come from the mixture `fit_expost` fits after training

    def __init__(self, kind: str, shape: Sequence[int], latent: int, hidden: Sequence[int] = (128, 128),
                 ops=None, likelihood: Optional[Likelihood] = None, variant: str = "uae",
                 form: str = "code", points: int = 8, heuristic: str = "random", kappa: float = 1e-3,
                 beta: Optional[float] = None, gamma: Optional[float] = None, arch: str = "library",
                 expost_components: int = 10):
        if variant not in UAE_VARIANTS:
            raise ValueError(f"variant must be one of {UAE_VARIANTS}, got {variant!r}")
        if form not in UAE_FORMS:
            raise ValueError(f"form must be one of {UAE_FORMS}, got {form!r}")
        if arch not in UAE_ARCHS:
            raise ValueError(f"arch must be one of {UAE_ARCHS}, got {arch!r}")
        if heuristic not in SIGMA_HEURISTICS:
            raise ValueError(f"heuristic must be one of {SIGMA_HEURISTICS}, got {heuristic!r}")
        if isinstance(latent, bool) or not isinstance(latent, int) or latent < 1:
            raise ValueError(f"latent must be an integer >= 1, got {latent!r}")
        if isinstance(points, bool) or not isinstance(points, int) or points < 1:
            raise ValueError(f"points (K) must be an integer >= 1, got {points!r}")
        if variant in SIGMA_POINT_VARIANTS and heuristic != "random":
            if points % 2:
                raise ValueError(f"points (K) must be even for the {heuristic!r} heuristic, got {points}")
            if points // 2 > latent:
                raise ValueError(f"points (K) = {points} asks for {points // 2} pairs but the latent has "
                                 f"only n = {latent} axes (the {heuristic!r} heuristic needs K/2 <= n)")
        kappa = _check_kappa(kappa, latent)
        beta = (1e-4 if variant == "rae-gp" else 2.5e-4) if beta is None else beta
        gamma = 1e-6 if gamma is None else gamma
        for name, v in (("beta", beta), ("gamma", gamma)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
        if (isinstance(expost_components, bool) or not isinstance(expost_components, int)
                or expost_components < 1):
            raise ValueError(f"expost_components must be an integer >= 1, got {expost_components!r}")
        if arch == "paper":
            _check_paper_shape(kind, shape)
        super().__init__(kind, shape, latent, hidden, ops, likelihood)
        self.variant, self.form, self.points, self.heuristic = variant, form, points, heuristic
        self.kappa, self.beta, self.gamma, self.arch = kappa, float(beta), float(gamma), arch
        if arch == "paper":
            self.body = PaperEncoder(self.shape)
            self.decoder = PaperDecoder(latent, self.shape)
        f = self.body.features
        self.mu_head = nn.Linear(f, latent)
        self.logvar_head = nn.Linear(f, latent)   # unused by rae-gp's loss, kept for one interface
        C = expost_components
        self.register_buffer("expost_weights", torch.zeros(C))
        self.register_buffer("expost_means", torch.zeros(C, latent))
        self.register_buffer("expost_chol", torch.eye(latent).repeat(C, 1, 1))
        self.register_buffer("expost_fitted", torch.zeros((), dtype=torch.long))

    # -- encoder / latents ----------------------------------------------------------------------------
    def encode(self, x: torch.Tensor):
        """(None, mu, logvar), float32 (B, n)."""
        h = self.body(x)
        return None, self.mu_head(h).float(), self.logvar_head(h).float()

    def _check_x(self, x) -> None:
        if not isinstance(x, torch.Tensor) or tuple(x.shape[1:]) != self.shape or x.dim() < 2:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x must have shape (B, {', '.join(map(str, self.shape))}), got {got}")

    def latents(self, mu: torch.Tensor, logvar: torch.Tensor, generator=None) -> torch.Tensor:
        """The variant's K latents per row, (B, K, n) (K = 1 for rae-gp)."""
        if self.variant == "rae-gp":
            return mu.unsqueeze(1)
        if self.variant in NOISE_VARIANTS:
            B, n = mu.shape
            eps = randn_rows((B, self.points, n), generator=generator, dtype=mu.dtype,
                             device=_device_of(generator, mu.device)).to(mu.device)
            return mu.unsqueeze(1) + torch.exp(0.5 * logvar).unsqueeze(1) * eps
        index = select_sigma_indices(self.heuristic, self.points, torch.exp(0.5 * logvar.detach()),
                                     generator)
        return _gather_points(mu, logvar, self.kappa, index)

    def decode_many(self, z: torch.Tensor) -> torch.Tensor:
        """D of latents (B, K, n) -> data-space means (B, K, *shape), in one decoder batch of B K."""
        B, K, n = z.shape
        return self.decode(z.reshape(B * K, n)).reshape(B, K, *self.shape)

    # -- loss terms -----------------------------------------------------------------------------------
    def reconstruction(self, x: torch.Tensor, decoded: torch.Tensor) -> torch.Tensor:
        """The squared error of x (B, *shape) against the decoded means (B, K, *shape): of the mean
        image (sigma-point variants, rae-gp) or per sample (vae, vae-w), reduced per `form`."""
        if self.variant in NOISE_VARIANTS:
            err = (x.unsqueeze(1) - decoded).pow(2)                 # (B, K, *shape)
            return err.mean() if self.form == "code" else err.flatten(2).sum(2).mean()
        err = (x - decoded.mean(1)).pow(2)                          # (B, *shape)
        return err.mean() if self.form == "code" else err.flatten(1).sum(1).mean()

    def regulariser(self, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """The weighted KL, Wasserstein or ||mu||^2 term, averaged over the batch."""
        if self.variant in KL_VARIANTS:
            rows = kl_standard_normal(mu, logvar)
        elif self.variant == "rae-gp":
            rows = mu.pow(2).sum(-1)
        elif self.form == "code":
            rows = wasserstein_code(mu, logvar)
        else:
            rows = wasserstein_paper(mu, logvar)
        return self.beta * rows.mean()

    def decoder_gradient(self, mu: torch.Tensor) -> torch.Tensor:
        """g = d/dmu sum_p D(mu)_p (B, n) from a fresh decode of mu, with create_graph when grad mode
        is on (so a penalty on g backpropagates into the decoder and the encoder); under no_grad it
        is still computed, detached."""
        train = torch.is_grad_enabled()
        with torch.enable_grad():
            m = mu if (train and mu.requires_grad) else mu.detach().requires_grad_(True)
            out = self.decode(m)
            (g,) = torch.autograd.grad(out.sum(), m, create_graph=train)
        return g

    def gradient_penalty(self, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """The weighted decoder gradient penalty (0 for the variants without one)."""
        if self.variant not in GP_VARIANTS:
            return torch.zeros((), dtype=mu.dtype, device=mu.device)
        g = self.decoder_gradient(mu)
        gnorm = torch.linalg.vector_norm(g, dim=-1)
        if self.variant == "rae-gp":
            rows = gnorm if self.form == "code" else gnorm.pow(2)
        else:
            smax = torch.exp(logvar).amax(-1)            # lambda_max of a diagonal covariance
            if self.form == "code":
                rows = smax.clamp(max=CODE_SIGMA2_CAP) * gnorm
            else:
                rows = smax * gnorm.pow(2)
        return self.gamma * rows.mean()

    def loss(self, x: torch.Tensor, generator=None) -> Dict[str, torch.Tensor]:
        """{"loss", "recon", "reg", "gp"}: loss = recon + reg + gp, each already weighted."""
        self._check_x(x)
        _, mu, logvar = self.encode(x)
        z = self.latents(mu, logvar, generator)
        recon = self.reconstruction(x, self.decode_many(z))
        reg = self.regulariser(mu, logvar)
        gp = self.gradient_penalty(mu, logvar).to(recon.dtype)
        return {"loss": recon + reg + gp, "recon": recon, "reg": reg, "gp": gp}

    def forward(self, x: torch.Tensor, generator=None) -> Dict[str, torch.Tensor]:
        """The deterministic reconstruction D(mu) (generator unused, kept for the interface)."""
        self._check_x(x)
        _, mu, logvar = self.encode(x)
        return {"xhat": self.decode(mu), "z": mu, "mu": mu, "logvar": logvar, "logits": None}

    # -- ex-post sampler ------------------------------------------------------------------------------
    @property
    def expost_components(self) -> int:
        return self.expost_weights.shape[0]

    @property
    def is_expost_fitted(self) -> bool:
        return bool(self.expost_fitted.item())

    def fit_expost(self, means: torch.Tensor, seed: int = 0, max_iter: int = 2000,
                   tol: float = 1e-3, reg_covar: float = 1e-6) -> Dict[str, Any]:
        """Fit a full-covariance GMM (sklearn GaussianMixture, min(C, N) components) on posterior
        means (N, n), store it in the buffers, and return a JSON-able report."""
        import numpy as np
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.mixture import GaussianMixture
        if not isinstance(means, torch.Tensor) or means.dim() != 2 or means.shape[1] != self.latent:
            got = tuple(means.shape) if isinstance(means, torch.Tensor) else type(means).__name__
            raise ValueError(f"means must have shape (N, {self.latent}), got {got}")
        x = means.detach().cpu().double().numpy()
        N = x.shape[0]
        if N < 2:
            raise ValueError(f"means must hold at least 2 points to fit the ex-post mixture, got {N}")
        if not np.isfinite(x).all():
            raise ValueError("means contain NaN or inf (the model diverged?)")
        C = self.expost_components
        used = min(C, N)
        gm = GaussianMixture(n_components=used, covariance_type="full", max_iter=max_iter, tol=tol,
                             reg_covar=reg_covar, random_state=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            gm.fit(x)
        chol = np.linalg.cholesky(gm.covariances_)
        w = np.zeros(C)
        w[:used] = gm.weights_
        m = np.zeros((C, self.latent))
        m[:used] = gm.means_
        L = np.tile(np.eye(self.latent), (C, 1, 1))
        L[:used] = chol
        with torch.no_grad():
            for buf, val in ((self.expost_weights, w), (self.expost_means, m), (self.expost_chol, L)):
                buf.copy_(torch.as_tensor(val, dtype=buf.dtype))
            self.expost_fitted.fill_(1)
        report = {"kind": "gmm-full", "components": used, "requested_components": C, "n": N,
                  "latent": self.latent, "converged": bool(gm.converged_), "n_iter": int(gm.n_iter_),
                  "log_likelihood": float(gm.score(x)), "lower_bound": float(gm.lower_bound_),
                  "seed": seed, "max_iter": max_iter, "tol": tol, "reg_covar": reg_covar,
                  "weights": [float(v) for v in w]}
        if used < C:
            report["note"] = (f"only {N} points for {C} components: fitted {used} components, the "
                              f"other {C - used} have weight 0")
        return report

    @torch.no_grad()
    def sample_latent(self, n: int, alpha: float = 1.0, generator=None) -> torch.Tensor:
        """n latents (n, latent) from the fitted mixture: a component by its weight, then
        mean + alpha * L eps (alpha scales the standard deviations)."""
        if not self.is_expost_fitted:
            raise RuntimeError("the UAE's ex-post mixture is not fitted: call fit_expost(means) on the "
                               "training set's posterior means before sampling")
        dev = self.expost_means.device
        where = _device_of(generator, dev)
        comp = torch.multinomial(self.expost_weights.to(where), n, replacement=True,
                                 generator=generator).to(dev)
        eps = torch.randn((n, self.latent), generator=generator, device=where,
                          dtype=self.expost_chol.dtype).to(dev)
        z = self.expost_means[comp] + alpha * (self.expost_chol[comp] @ eps.unsqueeze(-1)).squeeze(-1)
        return z

    @torch.no_grad()
    def generate(self, n: int, alpha: float = 1.0, routing: Optional[str] = None,
                 generator=None) -> torch.Tensor:
        """n decoded samples D(z) (no pixel noise) of the ex-post mixture; `routing` is checked for
        the common interface but a full-covariance mixture is always sampled jointly."""
        if routing is not None:
            check_routing(routing)
        return self.decode(self.sample_latent(n, alpha, generator).float()).float()

    # -- interpolation --------------------------------------------------------------------------------
    @staticmethod
    def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
        """Spherical interpolation per row of (B, n) vectors (the raw vectors, not normalised: the
        angle comes from their directions); rows that are near (anti)parallel or zero get the lerp."""
        dot = (a * b).sum(-1)
        na, nb = torch.linalg.vector_norm(a, dim=-1), torch.linalg.vector_norm(b, dim=-1)
        cos = (dot / (na * nb).clamp_min(1e-30)).clamp(-1.0, 1.0)
        omega = torch.arccos(cos)
        so = torch.sin(omega)
        ok = (so > 1e-6) & (na > 0) & (nb > 0)
        safe = torch.where(ok, so, torch.ones_like(so))
        wa = torch.where(ok, torch.sin((1 - t) * omega) / safe, torch.full_like(so, 1 - t))
        wb = torch.where(ok, torch.sin(t * omega) / safe, torch.full_like(so, t))
        return wa.unsqueeze(-1) * a + wb.unsqueeze(-1) * b

    @torch.no_grad()
    def interpolate(self, x1: torch.Tensor, x2: torch.Tensor, t: float = 0.5) -> torch.Tensor:
        """D(slerp(mu(x1), mu(x2), t)) for two batches of the same size (t = 0.5: the midpoint)."""
        self._check_x(x1)
        self._check_x(x2)
        if x1.shape[0] != x2.shape[0]:
            raise ValueError(f"x1 and x2 must have the same batch size, got {x1.shape[0]} and "
                             f"{x2.shape[0]}")
        _, mu1, _ = self.encode(x1)
        _, mu2, _ = self.encode(x2)
        return self.decode(self.slerp(mu1, mu2, float(t)))


# -- the recipe the trainer drives (models/protocol.py) --------------------------------------------
@dataclasses.dataclass
class UAEOptions(ModelOptions):
    arch: str = option("library", "the library's nets or the paper's architecture (SPEC-related 3.2; "
                       "28x28, 32x32, 64x64)", choices=UAE_ARCHS)
    uae_variant: str = option("uae", "the ablation family of paper 003 (uae: sigma points, mean-image "
                              "reconstruction, Wasserstein term, decoder gradient penalty)", choices=UAE_VARIANTS)
    uae_form: str = option("code", "the authors' code reductions (MSE mean, unsquared norms) or the "
                           "paper's Eqs. 8-12", choices=UAE_FORMS)
    uae_points: int = option(8, "sigma points (or samples) per example", metavar="K", minimum=1)
    uae_heuristic: str = option("random", "which sigma points a step uses", choices=SIGMA_HEURISTICS)
    uae_kappa: float = option(1e-3, "sigma-point spread kappa (> -n)", metavar="KAPPA")
    uae_beta: Optional[float] = option(None, "regulariser weight", type="float", metavar="B", minimum=0,
                                       default_text="2.5e-4; rae-gp 1e-4")
    uae_gamma: Optional[float] = option(None, "gradient-penalty weight", type="float", metavar="G", minimum=0,
                                        default_text="1e-6")
    expost_components: int = option(10, "components of the full-covariance GMM fitted on the training "
                                    "means (the sampler)", metavar="C", minimum=1)

    def finish(self, cfg, kind):
        n = cfg.latent
        if self.uae_heuristic != "random":
            if self.uae_points % 2:
                raise ConfigError(f"--uae-heuristic {self.uae_heuristic} takes sigma points in +/- pairs: "
                                  f"--uae-points must be even, got {self.uae_points}")
            if self.uae_points // 2 > n:
                raise ConfigError(f"--uae-points {self.uae_points} asks for {self.uae_points // 2} pairs, but "
                                  f"the latent has only n = {n} axes (at most {2 * n} points in pairs)")
        if not self.uae_kappa > -n:
            raise ConfigError(f"--uae-kappa must be a number > -n = {-n}, got {self.uae_kappa!r}")
        return self




@register
class UAERecipe(ModelRecipe):
    """Stages: `uae` (the chosen variant of the ablation family, on the data) and `expost` (a
    full-covariance Gaussian mixture fitted on the training-set posterior means: the sampler)."""
    name = "uae"
    title = "Unscented Autoencoder"
    Options = UAEOptions
    likelihoods = ("mse",)
    likelihood_reason = ("its reconstruction term is the squared error of the mean decoded image, "
                         "paper 003")
    # SPEC-related 3.2: n = 64 at paper scale (FMNIST, CelebA), 100 epochs; digits keep the dataset's
    dataset_defaults = {"mnist": {"latent": 64, "epochs_vae": 100}, "celeba": {"latent": 64, "epochs_vae": 100},
                        "images": {"latent": 64, "epochs_vae": 100}}

    def __init__(self, cfg, info, ops=None):
        self.expost_report = None
        super().__init__(cfg, info, ops)

    @property
    def display_name(self) -> str:
        return f"UAE family ({self.opts.uae_variant}, {self.opts.uae_form} form, K = {self.opts.uae_points})"

    def build(self):
        c, o, i = self.cfg, self.opts, self.info
        model = UnscentedAE(i.kind, i.shape, c.latent, self.hidden, ops=self.ops, likelihood=self.likelihood(),
                            variant=o.uae_variant, form=o.uae_form, points=o.uae_points,
                            heuristic=o.uae_heuristic, kappa=o.uae_kappa, beta=o.uae_beta, gamma=o.uae_gamma,
                            arch=o.arch, expost_components=o.expost_components)
        return {"ae": None, "vae": model}

    def stages(self):
        return [Stage("uae", "train", self.opts.uae_variant.upper(), self.cfg.epochs_vae, UnscentedAE.TERMS),
                Stage("expost", "fit", "ex-post GMM")]

    def loss_needs_grad(self, stage) -> bool:
        return self.generative.variant in GP_VARIANTS

    def fit(self, stage, trainer) -> None:
        model = self.generative
        means = trainer.encode(lambda x: model.encode(x)[1], "train")
        try:
            report = model.fit_expost(means, seed=self.cfg.seed)
        except ValueError as exc:
            from ..errors import DataError
            raise DataError(f"the ex-post mixture fit failed: {exc}") from exc
        self.expost_report = report
        trainer.write_json(report, "expost_fit.json")
        trainer.log(f"ex-post sampler: full-covariance GMM with {report.get('components')} components on "
                    f"{means.shape[0]} training means (converged {report.get('converged')})")

    def sampling_stage(self) -> str:
        return "outputs"

    def objective_units(self) -> str:
        if self.opts.uae_form == "code":
            return "squared error (mean over an example's entries and the batch, the authors' code) + weighted regularisers"
        return "squared error (sum over an example's entries) + weighted regularisers"

    def state(self):
        return {"expost_fit": self.expost_report}

    def load_state(self, ck, path):
        self.expost_report = ck.get("expost_fit")

    def summary(self):
        c = self.opts
        return {"expost_fit": self.expost_report, "uae_variant": c.uae_variant, "uae_form": c.uae_form,
                "uae_points": c.uae_points, "uae_heuristic": c.uae_heuristic, "uae_kappa": c.uae_kappa,
                "uae_beta": self.generative.beta, "uae_gamma": self.generative.gamma}
