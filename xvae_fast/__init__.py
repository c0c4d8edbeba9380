"""xvae_fast: fused CPU/CUDA kernels and a two-stage trainer for X-VAE, the VAE whose prior is a
Gaussian mixture fitted on a trained autoencoder's latents (see README.md and SPEC.md)."""
from .ops._ext import cuda_kernels_available, extension_available
from .ops import reference
from .ops.plans import PRESETS, CoordinatePlan, Plan
from .ops.prior import MixturePrior
from .ops.functional import (component_kl, draw_noise, gaussian_kl, kde_log_prob, mixture_bound, mixture_kl,
                         mixture_log_prob, responsibilities, routed_transport,
                         routed_transport_with_state, sample_mixture_with_state, sample_prior)
from .models.sigma_points import select_sigma_indices, sigma_points, ut_weights

if extension_available():
    from .ops import _registration  # noqa: F401  (fake kernels and autograd of the ops)


def load(path, device: str = "cpu"):
    """A trained model (`trained.TrainedModel`: sample, encode, decode, reconstruct, interpolate,
    log_likelihood, save) from a run folder or an export folder, in eval mode on `device`."""
    from .trained import load as _load   # imported on use: the trainer and models load only then
    return _load(path, device)


__all__ = [
    "MixturePrior", "Plan", "CoordinatePlan", "PRESETS", "responsibilities", "mixture_kl",
    "gaussian_kl", "mixture_log_prob", "kde_log_prob", "component_kl", "mixture_bound", "routed_transport", "routed_transport_with_state", "sample_prior",
    "sample_mixture_with_state", "draw_noise", "reference", "extension_available",
    "cuda_kernels_available", "sigma_points", "select_sigma_indices", "ut_weights", "load",
]
__version__ = "0.1.0"
