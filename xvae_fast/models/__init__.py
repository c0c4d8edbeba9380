"""Models: the stage-1 autoencoder, the stage-2 VAE / X-VAE, and their architectures."""
from __future__ import annotations

from .architectures import build_body, build_decoder
from .autoencoder import Autoencoder, recon_loss
from .ops import get_ops, ops_name
from .vae import VAE


def build_models(cfg, info, ops=None):
    """(autoencoder or None, vae) for a resolved TrainConfig and the data's DataInfo."""
    hidden = cfg.hidden or (128, 128)
    ae = Autoencoder(info.kind, info.shape, cfg.latent, hidden) if cfg.has_stage1 else None
    if cfg.model == "vae":
        mode, plan = "standard", None
    elif cfg.plan == "single":
        mode, plan = "single", None
    else:
        mode, plan = "mixture", cfg.build_plan()
    vae = VAE(info.kind, info.shape, cfg.latent, mode, plan, hidden, ops=ops)
    return ae, vae


__all__ = ["Autoencoder", "VAE", "build_models", "build_body", "build_decoder", "get_ops",
           "ops_name", "recon_loss"]
