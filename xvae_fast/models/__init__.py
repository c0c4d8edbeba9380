"""Models: the stage-1 autoencoder, the stage-2 VAE / X-VAE, the paper's baselines (VampPrior,
hierarchical, MoG prior, GM-VAE; docs/baselines.md) and their shared architectures."""
from __future__ import annotations

from .architectures import build_body, build_decoder
from .autoencoder import Autoencoder, recon_loss
from .baseline import BaselineVAE
from .gmvae import GMVAE, gumbel_temperature
from .hierarchical import HierarchicalVAE
from .mog import MoGPriorVAE
from .ops import get_ops, ops_name
from .vae import VAE
from .vamp import VampPriorVAE


def build_models(cfg, info, ops=None):
    """(autoencoder or None, vae) for a resolved TrainConfig and the data's DataInfo."""
    hidden = cfg.hidden or (128, 128)
    ae = Autoencoder(info.kind, info.shape, cfg.latent, hidden) if cfg.has_stage1 else None
    kind, shape, K = info.kind, info.shape, cfg.latent
    if cfg.model == "vamp":
        return ae, VampPriorVAE(kind, shape, K, cfg.pseudo_inputs, hidden, ops=ops)
    if cfg.model == "mog":
        return ae, MoGPriorVAE(kind, shape, K, cfg.mog_components, hidden, ops=ops)
    if cfg.model == "hierarchical":
        return ae, HierarchicalVAE(kind, shape, K, cfg.hier_top, cfg.hier_hidden, hidden, ops=ops)
    if cfg.model == "gmvae":
        return ae, GMVAE(kind, shape, K, cfg.gmvae_clusters, cfg.gumbel_tau_start, cfg.gumbel_tau_end,
                         cfg.gumbel_anneal, cfg.gumbel_anneal_steps, hidden, ops=ops)
    if cfg.model == "vae":
        mode, plan = "standard", None
    elif cfg.plan == "single":
        mode, plan = "single", None
    else:
        mode, plan = "mixture", cfg.build_plan()
    vae = VAE(info.kind, info.shape, cfg.latent, mode, plan, hidden, ops=ops)
    return ae, vae


__all__ = ["Autoencoder", "VAE", "BaselineVAE", "VampPriorVAE", "HierarchicalVAE", "MoGPriorVAE",
           "GMVAE", "build_models", "build_body", "build_decoder", "get_ops", "gumbel_temperature",
           "ops_name", "recon_loss"]
