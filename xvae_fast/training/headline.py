"""The number every run prints beside its objective, comparable across models (issue 23, item 5).

Each model reports its objective in its own likelihood's units (X-VAE's nats, the UT-VAE's squared
error, the Two-Stage VAE's Gaussian NLL with a learned variance), so two objectives say nothing about
which model generates better. Every model can sample, so the headline is a sample-quality number:
FD-data, the Fréchet distance between Gaussians fitted to 1,000 samples of the run's own sampler
(its --alpha and --routing) and to 1,000 test examples (a fixed seeded subset), in the data's own
space: pixels for images (average-pooled to at most 1,024 values per image, so the covariance stays
cheap), the vectors themselves otherwise. It needs no trained feature network, so it costs seconds
(about 3 per sampler on MNIST) and means the same in every run of one dataset; `evaluate`'s FD-LeNet (a classifier's
features) is the better metric and the one the paper's tables use. X-VAE runs also give the number
of their ex-post reference (the stage-1 autoencoder decoding the same prior), the row stage 2 must
beat."""
from __future__ import annotations

import math
from typing import Any, Dict, Optional

import numpy as np
import torch
import torch.nn.functional as F

N_HEADLINE = 1000            # samples and test examples
MAX_VALUES = 1024            # values per image after pooling
SEED_OFFSET = 3_000_017      # the samples' generator: --seed + this (apart from the figures' seeds)
REAL_SEED = 0                # the test subset: the same examples in every run of a dataset
LABEL = "FD-data"
FEATURES = ("the data's own space: pixels average-pooled to at most 1024 values per image, or the "
            "vectors themselves")


def pooled(x: torch.Tensor) -> np.ndarray:
    """(N, D) float64 features of data-space examples: images (N, C, H, W) average-pooled by the
    smallest integer factor that leaves at most MAX_VALUES values, vectors as they are."""
    x = x.detach().float().cpu()
    if x.dim() == 4 and x[0].numel() > MAX_VALUES:
        c, h, w = x.shape[1:]
        f = 2
        while c * math.ceil(h / f) * math.ceil(w / f) > MAX_VALUES:
            f += 1
        x = F.avg_pool2d(x, f, ceil_mode=True)
    return x.reshape(x.shape[0], -1).double().numpy()


def real_subset(data_test, n: int = N_HEADLINE) -> torch.Tensor:
    """Indices of the seeded test subset (the whole split when it is smaller)."""
    m = len(data_test)
    if m <= n:
        return torch.arange(m)
    g = torch.Generator().manual_seed(REAL_SEED)
    return torch.randperm(m, generator=g)[:n].sort().values


@torch.no_grad()
def _generate(model, n: int, alpha: float, routing: Optional[str], seed: int, device) -> torch.Tensor:
    g = torch.Generator(device=device).manual_seed(seed)
    return model.generate(n, alpha, routing, generator=g)


@torch.no_grad()
def comparable_headline(info, data_test, vae, references: Dict[str, Any], alpha: float,
                        routing: Optional[str], seed: int, device) -> Dict[str, Any]:
    """summary.json's `headline`: FD-data of the run's sampler, and of each of its reference samplers
    (by name: X-VAE's `expost`) with the same noise."""
    from ..evaluation.units import fd_or_none
    idx = real_subset(data_test)
    real_x = info.to_data_space(data_test.get_batch(idx))
    real = pooled(real_x)
    modes = [(m, m.training) for m in (vae, *references.values())]
    for m, _ in modes:       # BatchNorm layers (Two-Stage, UAE) must sample with their running stats
        m.eval()
    try:
        fake = pooled(info.to_data_space(_generate(vae, N_HEADLINE, alpha, routing, seed + SEED_OFFSET,
                                                   device)))
        out: Dict[str, Any] = {
            "metric": "fd_data", "label": LABEL, "value": fd_or_none(real, fake),
            "n_samples": N_HEADLINE, "n_real": int(len(idx)), "alpha": alpha, "routing": routing,
            "dims": int(real.shape[1]), "features": FEATURES,
        }
        if references:
            out["references"] = {name: ref.reference_title for name, ref in references.items()}
        for name, ref in references.items():
            fake_r = pooled(info.to_data_space(_generate(ref, N_HEADLINE, alpha, None, seed + SEED_OFFSET,
                                                         device)))
            out[name] = fd_or_none(real, fake_r)
    finally:
        for m, was in modes:
            m.train(was)
    return out


def headline_line(h: Optional[Dict[str, Any]]) -> Optional[str]:
    """The summary line's comparable number."""
    if not h:
        return None
    v = h.get("value")
    text = (f"{h['label']} {v:.4g}" if v is not None else f"{h['label']} not defined (degenerate samples)")
    text += (f" ({h['n_samples']} samples against {h['n_real']} test examples in data space, "
             "comparable across models on this dataset; lower is better")
    for name, title in (h.get("references") or {}).items():
        e = h.get(name)
        text += f"; {title} {e:.4g}" if e is not None else f"; {title} not defined"
    return text + ")"


def next_steps(summary: Dict[str, Any], run_dir: str) -> list:
    """The closing lines of a run: the comparable number, where the pictures are, what to run next."""
    import shlex
    lines = []
    h = headline_line(summary.get("headline"))
    if h:
        lines.append(h)
    pictures = [f for f in (summary.get("files") or {}).values() if f.endswith(".png")]
    # samples.png first, then the other sample grids, then the rest as written (a stable sort)
    pictures.sort(key=lambda f: (f != "samples.png", not f.startswith("samples")))
    if pictures:
        lines.append(f"look at: {', '.join(pictures)} in {run_dir}")
    q = shlex.quote(run_dir)
    lines.append(f"evaluate it: python -m xvae_fast.evaluate --run {q}  (FD-LeNet, precision/recall, "
                 "reconstructions; add --nll for the test likelihood where the model has a density)")
    lines.append(f"sample more: python -m xvae_fast.sample --run {q} --n 64 --out more.png")
    lines.append(f"run folder: {run_dir}")
    return lines
