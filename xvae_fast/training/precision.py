"""Numeric precision and memory layout of a training run (`--precision`, `--channels-last`).

`--precision bf16` runs the networks (linear and conv layers) under `torch.autocast` with bfloat16;
everything whose precision matters stays float32 by construction, not by autocast's lists:
- the heads cast mu, log-variance and logits to float32 (models/vae.py `encode`), so the fused ops
  (mixture KL, routed transport, mixture log-density, KDE) always see float32: their logsumexps over
  components and their sums over coordinates lose digits in bfloat16 (8 mantissa bits);
- the likelihoods upcast the decoder output before the per-example sums (models/likelihood.py
  `_acc`): a 784-pixel sum in bfloat16 would carry an error of several nats;
- the optimizer state, the weights and the gradients stay float32 (autocast casts copies), so bf16
  needs no loss scaling.
bf16 is fast only where the hardware has bfloat16 units: CUDA GPUs that report bf16 support, and CPUs
with AVX512-BF16 or AMX (oneDNN's `_is_mkldnn_bf16_supported`). On an AVX2-only CPU oneDNN emulates
it and a training step is ~15x slower (bench/paper_scale.py measures it), so `auto` (the default)
picks bf16 only where it is native. `--precision bf16` on such a CPU still runs (it is correct), with
a warning.

`--channels-last` stores conv weights (and so activations) in NHWC order. On CPU (oneDNN) it makes the
paper's MNIST step ~1.25x faster (bench/paper_scale.py); on CUDA it pays with bf16 tensor cores but
not in float32, so `auto` turns it on for image models on CPU and for bf16 on CUDA.
Both are runtime options: a run may resume with others (its numbers then differ in rounding only).
"""
from __future__ import annotations

import contextlib
from typing import Iterable

import torch

from ..config import CHANNELS_LAST, PRECISIONS


def native_bf16(device: torch.device) -> bool:
    """Whether `device` has bfloat16 arithmetic units (not an emulation)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(name: str, device: torch.device) -> str:
    """The precision a run uses on `device` ('fp32' or 'bf16') for the option value `name`."""
    if name not in PRECISIONS:
        raise ValueError(f"--precision must be one of {PRECISIONS}, got {name!r}")
    if name == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return name


def resolve_channels_last(name: str, device: torch.device, precision: str,
                          modules: Iterable[torch.nn.Module]) -> bool:
    """Whether to store the conv weights channels-last ('on' / 'off', or 'auto' as documented above).
    Models without conv layers are never converted (there is nothing to reorder)."""
    if name not in CHANNELS_LAST:
        raise ValueError(f"--channels-last must be one of {CHANNELS_LAST}, got {name!r}")
    has_conv = any(isinstance(m, torch.nn.modules.conv._ConvNd)
                   for mod in modules for m in mod.modules())
    if not has_conv or name == "off":
        return False
    if name == "on":
        return True
    return device.type == "cpu" or precision == "bf16"


def to_channels_last(modules: Iterable[torch.nn.Module]) -> None:
    for m in modules:
        m.to(memory_format=torch.channels_last)


def autocast(precision: str, device: torch.device):
    """The context the networks run under for a resolved precision."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
