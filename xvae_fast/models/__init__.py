"""Models: the stage-1 autoencoder, the stage-2 VAE / X-VAE, the paper's baselines (VampPrior,
hierarchical, MoG prior, GM-VAE; docs/baselines.md) and their shared architectures."""
from __future__ import annotations

from .architectures import build_body, build_decoder
from .autoencoder import Autoencoder
from .baseline import BaselineVAE
from .expost import ExPostModel
from .gmvae import GMVAE, gumbel_temperature
from .hierarchical import HierarchicalVAE
from .likelihood import LIKELIHOODS, Likelihood, build_likelihood
from .mog import MoGPriorVAE
from .ops import get_ops, ops_name
from .vae import VAE
from .vamp import VampPriorVAE


def build_models(cfg, info, ops=None):
    """(autoencoder or None, vae) for a resolved TrainConfig and the data's DataInfo. Each model gets
    its own instance of the run's likelihood (a learned variance is a parameter of its model)."""
    hidden = cfg.hidden or (128, 128)
    kind, shape, K = info.kind, info.shape, cfg.latent

    def lik():
        return build_likelihood(cfg.likelihood or "mse", kind, cfg.gamma_min or 0.0)

    ae = Autoencoder(kind, shape, K, hidden, likelihood=lik()) if cfg.has_stage1 else None
    common = dict(hidden=hidden, ops=ops, likelihood=lik())
    if cfg.model == "vamp":
        return ae, VampPriorVAE(kind, shape, K, cfg.pseudo_inputs, **common)
    if cfg.model == "mog":
        return ae, MoGPriorVAE(kind, shape, K, cfg.mog_components, **common)
    if cfg.model == "hierarchical":
        return ae, HierarchicalVAE(kind, shape, K, cfg.hier_top, cfg.hier_hidden, **common)
    if cfg.model == "gmvae":
        return ae, GMVAE(kind, shape, K, cfg.gmvae_clusters, cfg.gumbel_tau_start, cfg.gumbel_tau_end,
                         cfg.gumbel_anneal, cfg.gumbel_anneal_steps, **common)
    if cfg.model == "vae":
        mode, plan = "standard", None
    elif cfg.plan == "single":
        mode, plan = "single", None
    else:
        mode, plan = "mixture", cfg.build_plan()
    vae = VAE(kind, shape, K, mode, plan, kl=cfg.kl or "paper", routing=cfg.routing or "per-row",
              **common)
    return ae, vae


__all__ = ["Autoencoder", "VAE", "BaselineVAE", "VampPriorVAE", "HierarchicalVAE", "MoGPriorVAE",
           "GMVAE", "ExPostModel", "Likelihood", "LIKELIHOODS", "build_likelihood", "build_models",
           "build_body", "build_decoder", "get_ops", "gumbel_temperature", "ops_name"]
