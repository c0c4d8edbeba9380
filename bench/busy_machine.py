"""What another job on the machine does to a paper-scale run, per thread setting: with a competing
single-threaded busy loop (one core taken) or none, time `--steps` training steps of the MNIST
X-VAE's stage 1 (the Table 5 net, batch 128) and the EM prior fit (torch and scikit-learn) on
stage-1-shaped codes, with torch (and BLAS / OpenMP) at 1 and at 2 threads.

    python bench/busy_machine.py --data ../shared/data/mnist [--steps 60] [--codes 20000]

The codes are a fixed Gaussian-mixture draw of N x 64 (the fit's cost depends on its shape, not on
a trained net). Prints one markdown table; README's "Paper scale" section quotes it.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import time

import numpy as np
import torch


def _spin(stop):
    while not stop.is_set():
        pass


def step_time(x, steps, threads):
    from xvae_fast.models.autoencoder import Autoencoder
    from xvae_fast.models.likelihood import build_likelihood
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    ae = Autoencoder("image", (1, 28, 28), 64, likelihood=build_likelihood("bernoulli", "image"))
    ae = ae.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(ae.parameters(), lr=1e-3)
    ts = []
    for s in range(steps + 5):
        b = x[(s % 400) * 128:((s % 400) + 1) * 128]
        t0 = time.perf_counter()
        loss = ae.loss(b)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        ts.append(time.perf_counter() - t0)
    ts = sorted(ts[5:])
    return ts[len(ts) // 2]


def em_time(z, threads, backend):
    from threadpoolctl import threadpool_limits
    from xvae_fast.models.prior_fit import fit_mixture
    torch.set_num_threads(threads)
    with threadpool_limits(threads):
        t0 = time.perf_counter()
        fit_mixture(z, 64, seed=42, n_init=1, backend=backend)
        return time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--codes", type=int, default=20000)
    args = ap.parse_args(argv)
    from xvae_fast.data.mnist import find_file, read_idx
    x = torch.from_numpy(np.array(read_idx(find_file(args.data, "train-images-idx3-ubyte"))))
    x = x[:51200].float().div_(255).unsqueeze(1)
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(64, 64, generator=g) * 4
    z = centres[torch.randint(0, 64, (args.codes,), generator=g)] + torch.randn(args.codes, 64, generator=g)
    print("| machine | threads | training step (ms, median) | EM torch, 1 init (s) | EM scikit-learn, 1 init (s) |")
    print("|---|---:|---:|---:|---:|")
    for busy in (False, True):
        stop = mp.Event()
        proc = mp.Process(target=_spin, args=(stop,)) if busy else None
        if proc:
            proc.start()
        try:
            for threads in (2, 1):
                st = step_time(x, args.steps, threads)
                et = em_time(z, threads, "torch")
                es = em_time(z, threads, "sklearn")
                print(f"| {'one core busy' if busy else 'quiet'} | {threads} | {1e3 * st:.0f} | {et:.1f} | "
                      f"{es:.1f} |", flush=True)
        finally:
            if proc:
                stop.set()
                proc.join()
    return 0


if __name__ == "__main__":
    sys.exit(main())
