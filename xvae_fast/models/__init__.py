"""Models: the stage-1 autoencoder, the stage-2 VAE / X-VAE, the paper's baselines (VampPrior,
hierarchical, MoG prior, GM-VAE; docs/baselines.md), the related systems (Two-Stage VAE, Unscented
Autoencoder; docs/models.md) and their shared architectures. Each model family registers a recipe
(models/protocol.py) that the trainer drives; importing the modules below registers them, in the
order `--model` lists them."""
from __future__ import annotations

from .architectures import build_body, build_decoder
from .autoencoder import Autoencoder
from .baseline import BaselineVAE
from .expost import ExPostModel
from .likelihood import LIKELIHOODS, Likelihood, build_likelihood
from .ops import get_ops, ops_name
from .protocol import RECIPES, ModelRecipe, Stage, TensorRows, build_recipe, get_recipe, register
from .xvae import XVAERecipe
from .vae import VAE
from .vamp import VampPriorVAE
from .hierarchical import HierarchicalVAE
from .mog import MoGPriorVAE
from .gmvae import GMVAE, gumbel_temperature
from .twostage import TwoStageVAE
from .uae import UnscentedAE
from .avae import AVAE
from .introprior import IntroPriorVAE


def build_models(cfg, info, ops=None):
    """(autoencoder or None, generative model) for a resolved TrainConfig and the data's DataInfo."""
    recipe = build_recipe(cfg, info, ops)
    return recipe.autoencoder, recipe.generative


__all__ = ["Autoencoder", "VAE", "BaselineVAE", "VampPriorVAE", "HierarchicalVAE", "MoGPriorVAE",
           "GMVAE", "ExPostModel", "Likelihood", "LIKELIHOODS", "build_likelihood", "build_models",
           "build_body", "build_decoder", "get_ops", "gumbel_temperature", "ops_name", "RECIPES",
           "ModelRecipe", "Stage", "TensorRows", "build_recipe", "get_recipe", "register", "XVAERecipe", "UnscentedAE", "TwoStageVAE",
           "IntroPriorVAE", "AVAE"]
