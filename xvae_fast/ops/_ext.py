"""Loading of the compiled extension (xvae_fast._C), which registers the torch.ops.xvae_fast ops."""
from __future__ import annotations

import importlib.util
import pathlib
import sys
import warnings

import torch  # noqa: F401  (loads libc10/libtorch, which _C links against, before _C itself)


def _load_compiled():
    """Import xvae_fast._C (which registers the ops); None on success, else the ImportError.

    A source checkout on sys.path (the working directory, with `python -m xvae_fast.train` run from
    the repository root) shadows the installed package and has no build of its own: then the build
    of an installed xvae_fast found further along sys.path is loaded instead."""
    try:
        from .. import _C  # noqa: F401
        return None
    except ImportError as exc:
        error = exc
    if "xvae_fast._C" in sys.modules:  # explicitly blocked (sys.modules entry None)
        return error
    here = pathlib.Path(__file__).resolve().parent.parent      # the package folder, above ops/
    for entry in sys.path:
        folder = pathlib.Path(entry or ".").resolve() / "xvae_fast"
        if folder == here or not folder.is_dir():
            continue
        for built in sorted(folder.glob("_C*.so")) + sorted(folder.glob("_C*.pyd")):
            spec = importlib.util.spec_from_file_location("xvae_fast._C", built)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            sys.modules["xvae_fast._C"] = module
            return None
    return error


_LOAD_ERROR = _load_compiled()
if _LOAD_ERROR is not None:
    warnings.warn(
        "xvae_fast: the compiled extension xvae_fast._C could not be loaded "
        f"({_LOAD_ERROR}). The fused ops are unavailable; xvae_fast.ops.reference still works. Build it with "
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
            "from the source tree, or use xvae_fast.ops.reference.") from _LOAD_ERROR
