"""`python -m xvae_fast.sample --run DIR --n 64 --alpha 1.2 --out FILE`: decoded samples from a
trained run. FILE.npy gets the raw array in data units ((n, C, H, W) images in [0, 1], or (n, D)
vectors); FILE.png an image grid, or a scatter plot for vector data (first two features)."""
from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional

import numpy as np
import torch

from .errors import ConfigError, XVAEError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m xvae_fast.sample",
                                description="Decode samples from a trained run's prior.")
    p.add_argument("--run", required=True, metavar="DIR", help="run folder written by xvae_fast.train")
    p.add_argument("--n", type=int, default=64, help="number of samples (default 64)")
    p.add_argument("--alpha", type=float, default=1.0, help="std scale: <1 fidelity, >1 diversity "
                   "(default 1.0)")
    p.add_argument("--routing", choices=["per-row", "per-coordinate"], default=None,
                   help="mixture prior: one component per sample (per-row: exact sampling of the fitted "
                   "mixture) or one per coordinate (the paper's Eq. 20); default: the run's --routing")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument("--decoder-noise", action="store_true", help="draw x ~ p(x | z) (add the likelihood's "
                   "noise to the decoded mean; e.g. the learned variance of --likelihood gaussian)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or auto")
    p.add_argument("--nrow", type=int, default=8, help="images per row in a .png grid")
    p.add_argument("--out", required=True, metavar="FILE", help="output .npy or .png")
    return p


def sample_run(run: str, n: int, alpha: float = 1.0, routing: Optional[str] = None, seed: int = 0,
               device: str = "cpu", decoder_noise: bool = False):
    """(samples in data units, DataInfo) from a run folder."""
    from .training import load_run
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"--n must be a positive integer, got {n!r}")
    if not alpha > 0 or alpha == float("inf"):
        raise ConfigError(f"--alpha must be a positive finite number, got {alpha!r}")
    cfg, info, vae, _ = load_run(run, device)
    dev = next(vae.parameters()).device
    g = torch.Generator(device=dev).manual_seed(seed)
    x = vae.generate(n, alpha, routing, generator=g)
    if decoder_noise:
        x = vae.likelihood.draw(x, generator=g)
    return info.to_data_space(x), info


def write_samples(x: torch.Tensor, info, path: str, nrow: int = 8, title: str = "") -> None:
    ext = os.path.splitext(path)[1].lower()
    if ext not in (".npy", ".png"):
        raise ConfigError(f"--out must end in .npy or .png, got {path!r}")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ConfigError(f"output folder {folder!r} does not exist")
    if ext == ".npy":
        np.save(path, x.numpy())
        return
    from .training.plots import save_image_grid, save_scatter
    if info.kind == "image":
        save_image_grid(x, path, nrow=nrow, title=title)
    else:
        save_scatter([x.numpy()], ["samples"], path, title=title)


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        x, info = sample_run(args.run, args.n, args.alpha, args.routing, args.seed, args.device,
                             args.decoder_noise)
        write_samples(x, info, args.out, args.nrow,
                      title=f"{args.n} samples, alpha={args.alpha:g}, {args.routing or 'run routing'}")
    except XVAEError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.out} ({tuple(x.shape)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
