"""`python -m xvae_fast.sample --run DIR --n 64 --alpha 1.2 --out FILE`: decoded samples from a
trained run. FILE.npy gets the raw array in data units ((n, C, H, W) images in [0, 1], or (n, D)
vectors); FILE.png an image grid, or a scatter plot for vector data (first two features)."""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
from typing import List, Optional, Tuple

import numpy as np
import torch

from .argv import CommandParser
from .atomic_file import atomic_open, disk_full_error
from .errors import ConfigError, XVAEError
from .outpaths import check_out_file


def build_parser() -> argparse.ArgumentParser:
    p = CommandParser(prog="python -m xvae_fast.sample",
                                description="Decode samples from a trained run's prior.")
    p.add_argument("--run", required=True, metavar="DIR", help="run folder written by xvae_fast.train "
                   "(or an export written by xvae_fast.export)")
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
    p.add_argument("--reference", default=None, metavar="NAME", help="draw from a reference sampler "
                   "instead of the model: expost (X-VAE's stage-1 autoencoder on its fitted prior), "
                   "stage1 (Two-Stage VAE, stage 1 on N(0, I)), normal (AVAE, N(0, I))")
    p.add_argument("--nrow", type=int, default=8, help="images per row in a .png grid")
    p.add_argument("--out", required=True, metavar="FILE", help="output .npy or .png")
    return p


# A .png holds a viewable figure, not a data dump: grids and scatter plots are capped (the .npy output
# streams any --n in bounded memory).
MAX_GRID_IMAGES = 4096
MAX_SCATTER_POINTS = 200_000
# values any one layer outputs at a time while decoding (8 MB of float32): the batch is sized from
# the widest layer of the model's decoder, not from the data shape, which for a conv decoder is the
# smaller (the digits decoder's 32 x 8 x 8 layer is 32 times an 8x8 digit)
BATCH_ELEMENTS = 2 ** 21
PROBE_ROWS = (2, 4)        # the two small batches whose layer outputs give each layer's per-row size
SCATTER_DATA = 5000   # training points drawn faintly beneath a 2-D scatter


def check_request(n, alpha, nrow: int = 8) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"--n must be a positive integer, got {n!r}")
    if not alpha > 0 or alpha == float("inf"):
        raise ConfigError(f"--alpha must be a positive finite number, got {alpha!r}")
    if isinstance(nrow, bool) or not isinstance(nrow, int) or nrow < 1:
        raise ConfigError(f"--nrow must be a positive integer, got {nrow!r}")


def batch_rows(shape, values_per_row: int = 0) -> int:
    """Rows decoded at a time: large batches for speed (per-call overhead dominates small ones), at
    most BATCH_ELEMENTS values in the output or in any layer's output (`values_per_row`: the widest
    layer's, from `layer_values_per_row`) for bounded memory."""
    per_row = max(1, int(np.prod(shape)), int(values_per_row))
    return int(min(65536, max(1, BATCH_ELEMENTS // per_row)))


def layer_values_per_row(model, alpha: float = 1.0, routing: Optional[str] = None) -> int:
    """The most values per generated row that any module of `model` outputs during `generate`:
    measured on two small batches (a throwaway generator), as the growth of each module call's output
    from one to the other, so parts that do not grow with the batch (a VampPrior's pseudo-inputs) do
    not count as per-row."""
    dev = next(model.parameters()).device
    calls: List[List[int]] = []
    hook_sizes: List[int] = []

    def hook(module, inputs, output):
        outs = output if isinstance(output, (tuple, list)) else (output,)
        hook_sizes.append(sum(t.numel() for t in outs if isinstance(t, torch.Tensor)))

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    try:
        with torch.no_grad():
            for n in PROBE_ROWS:
                hook_sizes.clear()
                model.generate(n, alpha, routing, generator=torch.Generator(device=dev).manual_seed(0))
                calls.append(list(hook_sizes))
    finally:
        for h in handles:
            h.remove()
    (a, small), (b, large) = zip(PROBE_ROWS, calls)
    if len(small) != len(large):     # another call sequence per batch size: count every value as per-row
        return -(-max(large, default=0) // b)
    return max((-(-(y - x) // (b - a)) for x, y in zip(small, large)), default=0)


def sample_batches(run: str, n: int, alpha: float = 1.0, routing: Optional[str] = None, seed: int = 0,
                   device: str = "cpu", decoder_noise: bool = False, batch: Optional[int] = None,
                   reference: Optional[str] = None):
    """(DataInfo, an iterator of CPU float32 sample batches in data units, n rows in all) from a run
    folder: memory is one batch whatever n. One seeded generator serves every batch."""
    from .trained import load
    check_request(n, alpha)
    model = load(run, device)                       # a run folder or an export
    info, vae = model.info, model.sampler(reference)  # the model, or the named reference sampler
    dev = next(vae.parameters()).device
    batch = batch or batch_rows(info.shape, layer_values_per_row(vae, alpha, routing))
    g = torch.Generator(device=dev).manual_seed(seed)

    def batches():
        with torch.no_grad():
            for s in range(0, n, batch):
                x = vae.generate(min(batch, n - s), alpha, routing, generator=g)
                if decoder_noise:
                    x = vae.likelihood.draw(x, generator=g)
                yield info.to_data_space(x).float().cpu()
    return info, batches()


def sample_run(run: str, n: int, alpha: float = 1.0, routing: Optional[str] = None, seed: int = 0,
               device: str = "cpu", decoder_noise: bool = False):
    """(samples in data units, DataInfo) from a run folder, held in memory (see sample_batches)."""
    info, it = sample_batches(run, n, alpha, routing, seed, device, decoder_noise)
    return torch.cat(list(it)), info


def check_out(path: str, n: int, kind: Optional[str] = None) -> None:
    """The --out file before any work: .npy or .png, in a writable folder, and a .png of a viewable size."""
    check_out_file(path, "--out", (".npy", ".png"))
    if path.lower().endswith(".png"):
        cap = {"image": MAX_GRID_IMAGES, "vector": MAX_SCATTER_POINTS}.get(kind, MAX_GRID_IMAGES)
        if n > cap:
            what = "an image grid" if kind != "vector" else "a scatter plot"
            raise ConfigError(f"--n {n} is too many for {what} in a .png (at most {cap}); write "
                              "--out FILE.npy, which streams any number of samples")


def write_npy_stream(batches, n: int, shape, path: str) -> Tuple[int, ...]:
    """Write the batches to `path` as one (n, *shape) float32 .npy, batch by batch (bounded memory),
    through a temporary file renamed at the end (no half-written .npy on an error)."""
    full = (n,) + tuple(shape)
    with atomic_open(path, "wb", prefix=".samples-", suffix=".npy.part") as f:
        np.lib.format.write_array_header_1_0(
            f, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)), "fortran_order": False,
                "shape": full})
        rows = 0
        for x in batches:
            f.write(np.ascontiguousarray(x.numpy(), dtype=np.float32).tobytes())
            rows += x.shape[0]
        if rows != n:
            raise RuntimeError(f"wrote {rows} rows, expected {n}")
    return full


def training_points(run: str, limit: int = SCATTER_DATA) -> Optional[np.ndarray]:
    """Up to `limit` training examples of a vector run, in data units (the faint scatter background);
    None when the data cannot be read here."""
    from .checkpoint_file import load_checkpoint
    from .config import TrainConfig
    from .data import load_dataset
    try:
        cfg = TrainConfig.from_saved(load_checkpoint(run)["config"])
        bundle = load_dataset(cfg)
        n = min(limit, len(bundle.train))
        rows = torch.randperm(len(bundle.train), generator=torch.Generator().manual_seed(0))[:n]
        return bundle.info.to_data_space(bundle.train.get_batch(rows.sort().values).float()).numpy()
    except (XVAEError, OSError):
        return None


def write_samples(x: torch.Tensor, info, path: str, nrow: int = 8, title: str = "",
                  reference: Optional[np.ndarray] = None) -> None:
    """An in-memory batch to .npy or .png (the image grid, or for vectors a scatter over the faint
    `reference` points)."""
    check_out_file(path, "--out", (".npy", ".png"))
    from .plots import save_image_grid, save_scatter
    try:
        if path.lower().endswith(".npy"):
            np.save(path, x.numpy())
        elif info.kind == "image":
            save_image_grid(x, path, nrow=nrow, title=title)
        else:
            save_scatter([x.numpy()], ["samples"], path, title=title, reference=reference)
    except OSError as exc:
        # a half-written file is no picture: remove it; a full disk is one line naming the file
        with contextlib.suppress(OSError):
            os.unlink(path)
        full = disk_full_error(exc, path)
        if full is not None:
            raise full from None
        raise


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    title = f"{args.n} samples, alpha={args.alpha:g}, {args.routing or 'run routing'}"
    title += f", {args.reference} reference" if args.reference else ""
    try:
        check_request(args.n, args.alpha, args.nrow)
        check_out(args.out, args.n)
        info, batches = sample_batches(args.run, args.n, args.alpha, args.routing, args.seed, args.device,
                                       args.decoder_noise, reference=args.reference)
        check_out(args.out, args.n, info.kind)
        if args.out.lower().endswith(".npy"):
            shape = write_npy_stream(batches, args.n, info.shape, args.out)
        else:
            x = torch.cat(list(batches))
            ref = training_points(args.run) if info.kind == "vector" else None
            write_samples(x, info, args.out, args.nrow, title=title, reference=ref)
            shape = tuple(x.shape)
    except XVAEError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.out} ({shape})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
