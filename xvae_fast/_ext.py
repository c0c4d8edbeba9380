"""Loading of the compiled extension (xvae_fast._C), which registers the torch.ops.xvae_fast ops."""
from __future__ import annotations

import warnings

import torch  # noqa: F401  (loads libc10/libtorch, which _C links against, before _C itself)

_LOAD_ERROR = None
try:
    from . import _C  # noqa: F401  (importing registers the ops)
except ImportError as exc:  # pragma: no cover - exercised only without a build
    _LOAD_ERROR = exc
    warnings.warn(
        "xvae_fast: the compiled extension xvae_fast._C could not be loaded "
        f"({exc}). The fused ops are unavailable; xvae_fast.reference still works. Build it with "
        "`pip install --no-build-isolation .` in the source tree (torch must be installed first).",
        RuntimeWarning, stacklevel=2)


def extension_available() -> bool:
    """True when the fused kernels are loaded."""
    return _LOAD_ERROR is None


def cuda_kernels_available() -> bool:
    """True when the extension was built with its CUDA kernels."""
    if _LOAD_ERROR is not None:
        return False
    return torch._C._dispatch_has_kernel_for_dispatch_key("xvae_fast::mixture_kl_forward", "CUDA")


def require_extension() -> None:
    if _LOAD_ERROR is not None:
        raise RuntimeError(
            "xvae_fast's compiled extension is missing, so the fused ops cannot run "
            f"(import error: {_LOAD_ERROR}). Reinstall with `pip install --no-build-isolation .` "
            "from the source tree, or use xvae_fast.reference.") from _LOAD_ERROR
