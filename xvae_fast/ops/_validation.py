"""Argument checks that name the user's argument (shapes, dtypes, devices, values)."""
from __future__ import annotations

import torch

FLOATING = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
REDUCTIONS = {"none": 0, "mean": 1, "sum": 2}

# Prior standard deviations the ops accept, per accumulation dtype (float32 for float32, bfloat16 and
# float16 inputs; float64 for float64). Inside the range 1/s^2 stays <= 1e18 (float32) or 1e150
# (float64), so every KL, log-density and transport is finite for any finite posterior whose
# (sigma^2 + (mu - m)^2) stays below ~1e20 (float32); outside it 1/s^2 over- or underflows.
STD_RANGE = {torch.float32: (1e-9, 1e9), torch.float64: (1e-75, 1e75)}


def check_std_range(std: torch.Tensor, name: str, acc: torch.dtype, what: str = "") -> None:
    """Raise if any std lies outside STD_RANGE[acc] (one host sync; skipped while compiling)."""
    if not values_checkable() or std.numel() == 0:
        return
    lo, hi = STD_RANGE[acc]
    if bool(((std >= lo) & (std <= hi)).all()):
        return
    bad = std[~((std >= lo) & (std <= hi))]
    inputs = "float64 inputs" if acc == torch.float64 else "float32, bfloat16 and float16 inputs"
    raise ValueError(f"{name} must lie in [{lo:g}, {hi:g}] for {inputs}{what}, got "
                     f"{bad.flatten()[0].item():.3g} (min {std.min().item():.3g}, max "
                     f"{std.max().item():.3g}); outside it 1/std^2 over- or underflows")


def check_tensor(t, name: str) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    return t


def values_checkable() -> bool:
    """Value checks (NaN, signs, sums) read tensor data, which torch.compile cannot trace without a
    graph break; while compiling they are skipped, and shape, dtype and device checks still run."""
    return not torch.compiler.is_compiling()


def check_finite(t: torch.Tensor, name: str) -> None:
    if not values_checkable():
        return
    if t.numel() and not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains NaN or inf")


def check_inputs_finite(enabled: bool, tensors) -> None:
    """The ops' opt-in `check_finite=True`: one reduction over every named input and one host sync;
    on failure the first non-finite argument is named. Off by default (a sync per call is too dear
    on the training path, where the trainer already checks each loss term once per step)."""
    if not enabled or not values_checkable():
        return
    present = [(n, t.detach()) for n, t in tensors.items() if t is not None and t.numel()]
    if not present or bool(torch.stack([torch.isfinite(t).all() for _, t in present]).all()):
        return
    for name, t in present:
        check_finite(t, name)


def check_batch(name: str, t, ref_name: str = None, ref: torch.Tensor = None, K: int = None):
    """A (B, K) floating tensor; with `ref`, of ref's shape, dtype and device."""
    check_tensor(t, name)
    if t.dtype not in FLOATING:
        raise TypeError(f"{name} must be float32, float64, float16 or bfloat16, got {t.dtype}")
    if t.dim() != 2:
        raise ValueError(f"{name} must have shape (B, K), got {tuple(t.shape)}")
    if K is not None and t.shape[1] != K:
        raise ValueError(f"{name} has {t.shape[1]} latent coordinates, but the prior has K = {K}")
    if ref is not None:
        if t.shape != ref.shape:
            raise ValueError(f"{name} has shape {tuple(t.shape)} but {ref_name} has {tuple(ref.shape)}")
        if t.dtype != ref.dtype:
            raise TypeError(f"{name} has dtype {t.dtype} but {ref_name} has {ref.dtype}")
        if t.device != ref.device:
            raise ValueError(f"{name} is on {t.device} but {ref_name} is on {ref.device}")
    return t


def check_reduction(reduction: str) -> int:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {tuple(REDUCTIONS)}, got {reduction!r}")
    return REDUCTIONS[reduction]


def check_prior_device(prior, ref: torch.Tensor, ref_name: str) -> None:
    if prior.means.device != ref.device:
        raise ValueError(f"the prior is on {prior.means.device} but {ref_name} is on {ref.device}; "
                         "move it with prior.to(device)")


def check_kde_args(z, centres, bandwidth, exclude_self: bool):
    """kde_log_prob's arguments: z (N, d) floating; centres (m, d) of z's dtype and device, m >= 1
    (with exclude_self, m == N >= 2); bandwidth a positive finite Python number or a 0-dim floating
    tensor that does not require grad (the op does not differentiate it). Value checks (bandwidth,
    finite centres) cost one host sync and are skipped while compiling."""
    check_tensor(z, "z")
    if z.dtype not in FLOATING:
        raise TypeError(f"z must be float32, float64, float16 or bfloat16, got {z.dtype}")
    if z.dim() != 2:
        raise ValueError(f"z must have shape (N, d), got {tuple(z.shape)}")
    check_tensor(centres, "centres")
    if centres.dim() != 2 or centres.shape[0] < 1 or centres.shape[1] != z.shape[1]:
        raise ValueError(f"centres must have shape (m, d) with m >= 1 and d = {z.shape[1]} to match z, "
                         f"got {tuple(centres.shape)}")
    if centres.dtype != z.dtype:
        raise TypeError(f"centres has dtype {centres.dtype} but z has {z.dtype}; pass centres.to(z.dtype)")
    if centres.device != z.device:
        raise ValueError(f"centres is on {centres.device} but z is on {z.device}")
    if not isinstance(exclude_self, bool):
        raise TypeError(f"exclude_self must be a bool, got {type(exclude_self).__name__}")
    if exclude_self and (centres.shape[0] < 2 or centres.shape[0] != z.shape[0]):
        raise ValueError("exclude_self=True leaves out the i = j term, so it needs the points to be the "
                         "centres' own rows: z and centres with the same number of rows, at least 2, "
                         f"got N = {z.shape[0]} and m = {centres.shape[0]}")
    if isinstance(bandwidth, torch.Tensor):
        if bandwidth.dim() != 0:
            raise ValueError(f"bandwidth must be a positive number or a 0-dim tensor, got a tensor of "
                             f"shape {tuple(bandwidth.shape)}")
        if not bandwidth.is_floating_point():
            raise TypeError(f"bandwidth must be a floating-point tensor, got {bandwidth.dtype}")
        if bandwidth.device != z.device and bandwidth.device.type != "cpu":
            raise ValueError(f"bandwidth is on {bandwidth.device} but z is on {z.device}")
        if bandwidth.requires_grad and torch.is_grad_enabled():
            raise ValueError("bandwidth requires grad, but kde_log_prob does not differentiate the "
                             "bandwidth (nor the centres); pass bandwidth.detach(), or fit it with "
                             "xvae_fast.ops.reference.kde_log_prob's formula written out in PyTorch")
    elif isinstance(bandwidth, bool) or not isinstance(bandwidth, (int, float)):
        raise TypeError(f"bandwidth must be a positive number or a 0-dim tensor, got "
                        f"{type(bandwidth).__name__}")
    elif not (0 < bandwidth < float("inf")):
        raise ValueError(f"bandwidth must be positive and finite, got {bandwidth!r}")
    if not values_checkable():
        return
    # min and max in one pass (NaN propagates into both): no (m, d) temporary, unlike isfinite().all()
    ok = torch.isfinite(torch.stack(torch.aminmax(centres.detach()))).all()
    if isinstance(bandwidth, torch.Tensor):
        h = bandwidth.detach().to(ok.device)
        ok = ok & torch.isfinite(h) & (h > 0)
    if bool(ok):
        return
    if isinstance(bandwidth, torch.Tensor) and not (0 < float(bandwidth) < float("inf")):
        raise ValueError(f"bandwidth must be positive and finite, got {float(bandwidth)!r}")
    raise ValueError("centres contains NaN or inf")
