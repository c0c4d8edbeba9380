"""End-to-end training step of the default X-VAE (plan matched, --kl tight, bernoulli or gaussian
likelihood), forward + backward + Adam step: eager with the fused ops, `torch.compile` of the same
loss with the fused ops (what `python -m xvae_fast.train --compile` runs; compile time reported
apart), and eager with the plain-PyTorch reference ops. Also the per-epoch cost of batching the
bundled digits from tensors held in memory vs through a DataLoader. All figures of one setup come
from one run, timed in rotation (one step of each per round) so a slow phase of a shared machine
falls on all alike.

    python bench/step.py [--device cpu|cuda] [--repeats 20] [--setups clusters,digits,mnist,celeba]
                         [--threads N]
"""
from __future__ import annotations

import argparse
import time

import os
import sys

import torch

import xvae_fast as xf
from xvae_fast import reference as R

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from report import chosen_setups  # noqa: E402
from timing import interleaved_medians  # noqa: E402

SETUPS = {  # name: (label, kind, per-example shape, K, batch)
    "clusters": ("clusters MLP, K=3", "vector", (2,), 3, 128),
    "digits": ("8x8 digits net, K=10", "image", (1, 8, 8), 10, 128),
    "mnist": ("MNIST-shaped conv (1x28x28), K=64", "image", (1, 28, 28), 64, 128),
    "celeba": ("CelebA-shaped conv (3x64x64), K=256", "image", (3, 64, 64), 256, 64),
}


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build(kind, shape, K, ops, device):
    from xvae_fast.models.likelihood import build_likelihood
    from xvae_fast.models.vae import VAE
    from xvae_fast.ops.plans import Plan
    torch.manual_seed(0)
    lik = build_likelihood("bernoulli" if kind == "image" and shape[0] == 1 else "gaussian", kind, 0.0)
    model = VAE(kind, shape, K, "mixture", Plan.preset("matched", K), ops=ops, kl="tight",
                likelihood=lik).to(device)
    g = torch.Generator().manual_seed(0)
    w = torch.rand(K, generator=g) + 0.1
    model.set_prior(xf.MixturePrior(w / w.sum(), torch.randn(K, K, generator=g),
                                    torch.rand(K, K, generator=g) + 0.5).to(device))
    return model


def step_fn(model, loss, x):
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step():
        opt.zero_grad(set_to_none=True)
        loss(x)["loss"].backward()
        opt.step()
    return step


def time_setup(name, device, repeats):
    label, kind, shape, K, batch = SETUPS[name]
    x = torch.rand(batch, *shape, device=device)
    if kind == "image" and shape[0] == 1:
        x = (x > 0.5).float()
    fused, ref = build(kind, shape, K, xf, device), build(kind, shape, K, R, device)
    compiled = build(kind, shape, K, xf, device)
    steps = {"eager": step_fn(fused, fused.loss, x), "reference": step_fn(ref, ref.loss, x)}
    comp_loss = torch.compile(compiled.loss)
    steps["compiled"] = step_fn(compiled, comp_loss, x)
    t0 = time.perf_counter()
    steps["compiled"]()
    _sync(device)
    compile_s = time.perf_counter() - t0
    med = {k: v * 1e3 for k, v in interleaved_medians(steps, repeats, warmup=3,
                                                       sync=lambda: _sync(device)).items()}
    return dict(setup=label, batch=batch, compile_s=compile_s, **{f"{k}_ms": v for k, v in med.items()})


def batching_cost(repeats: int = 5):
    """Seconds per epoch of batching the bundled digits (1437 training images, batch 128): slices of
    tensors held in memory (what the trainer does for the bundled data) vs a DataLoader over them."""
    from xvae_fast.config import TrainConfig
    from xvae_fast.data import load_dataset
    ds = load_dataset(TrainConfig(dataset="digits")).train
    n, bs = len(ds), 128

    def in_memory():
        order = torch.randperm(n)
        for b in range(0, n, bs):
            ds.get_batch(order[b:b + bs])

    def loader():
        for _ in torch.utils.data.DataLoader(ds, batch_size=bs, shuffle=True, num_workers=0):
            pass
    return interleaved_medians({"in_memory": in_memory, "dataloader": loader}, repeats, warmup=1)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--setups", default=",".join(SETUPS))
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    names = chosen_setups(ap, a.setups, SETUPS)
    print(f"training step (forward + backward + Adam), default X-VAE, device {device}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}; medians of {a.repeats} rounds")
    print("| setup | batch | eager fused ms | compiled fused ms | eager reference ms | compiled vs eager "
          "| fused vs reference | compile s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name in names:
        r = time_setup(name, device, a.repeats)
        print(f"| {r['setup']} | {r['batch']} | {r['eager_ms']:.2f} | {r['compiled_ms']:.2f} | "
              f"{r['reference_ms']:.2f} | {r['eager_ms'] / r['compiled_ms']:.2f}x | "
              f"{r['reference_ms'] / r['eager_ms']:.2f}x | {r['compile_s']:.1f} |", flush=True)
    if device.type == "cpu":
        c = batching_cost()
        print(f"batching one epoch of the bundled digits: in-memory tensors {c['in_memory'] * 1e3:.1f} ms, "
              f"DataLoader {c['dataloader'] * 1e3:.1f} ms ({c['dataloader'] / c['in_memory']:.1f}x)")


if __name__ == "__main__":
    main()
