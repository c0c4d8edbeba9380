"""Which implementation of the X-VAE ops the models call: the fused kernels when the compiled
extension is loaded (and, for CUDA tensors, built with its CUDA kernels), otherwise the
plain-PyTorch twins in xvae_fast.ops.reference, with a warning."""
from __future__ import annotations

import types
import warnings

_warned = set()


def _warn(key: str, msg: str) -> None:
    if key not in _warned:
        warnings.warn(msg, RuntimeWarning, stacklevel=3)
        _warned.add(key)


def get_ops(prefer_reference: bool = False, device=None) -> types.ModuleType:
    """The module providing responsibilities, mixture_kl, gaussian_kl, routed_transport and
    sample_prior with the public signatures, for tensors on `device` (default: CPU)."""
    import torch

    import xvae_fast
    from xvae_fast import reference
    if prefer_reference:
        return reference
    if not xvae_fast.extension_available():
        _warn("missing", "xvae_fast: the compiled extension is not available; the trainer uses the "
                         "plain-PyTorch reference ops (slower). Reinstall with `pip install "
                         "--no-build-isolation .` to get the fused kernels.")
        return reference
    if device is not None and torch.device(device).type == "cuda" and not xvae_fast.cuda_kernels_available():
        _warn("cuda", "xvae_fast: the compiled extension was built without CUDA kernels; on CUDA the "
                      "trainer uses the plain-PyTorch reference ops. Rebuild on a machine with the CUDA "
                      "toolkit to get the fused CUDA kernels.")
        return reference
    return xvae_fast


def ops_name(ops) -> str:
    import xvae_fast
    return "fused" if ops is xvae_fast else "reference"
