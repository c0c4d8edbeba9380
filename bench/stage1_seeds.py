"""How often the paper's stage 1 dies on MNIST, per pixel mean (`--image-output`): the Table 5
autoencoder, the squared error summed per image, Adam 1e-3, batch 128, `--steps` steps per seed; a
run counts as dead when its last batch's error is above `--dead-above` (all black is about 87).

    python bench/stage1_seeds.py --data ../shared/data/mnist [--seeds 1-19,42] [--steps 100]
        [--outputs sigmoid,linear] [--likelihood mse|gaussian]

docs/choosing-defaults.md ("The pixel mean under the squared error") quotes its table.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np
import torch


def parse_seeds(text: str):
    seeds = []
    for part in text.split(","):
        if "-" in part:
            a, b = part.split("-")
            seeds += list(range(int(a), int(b) + 1))
        elif part:
            seeds.append(int(part))
    return seeds


def last_loss(x: torch.Tensor, seed: int, steps: int, likelihood: str, output: str) -> float:
    from xvae_fast.models.autoencoder import Autoencoder
    from xvae_fast.models.likelihood import build_likelihood
    torch.manual_seed(seed)
    ae = Autoencoder("image", (1, 28, 28), 64, likelihood=build_likelihood(likelihood, "image", 0.0, output))
    opt = torch.optim.Adam(ae.parameters(), lr=1e-3)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    for s in range(steps):
        b = x[order[s * 128:(s + 1) * 128]]
        loss = ae.likelihood.nll(ae.decoder(ae.encode(b)), b)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    # the squared error of the last batch (for gaussian too, so the threshold means the same)
    with torch.no_grad():
        return float((ae.decode(ae.encode(b)) - b).pow(2).flatten(1).sum(1).mean())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--seeds", default="1-19,42")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--outputs", default="sigmoid,linear")
    ap.add_argument("--likelihood", default="mse", choices=["mse", "gaussian"])
    ap.add_argument("--dead-above", type=float, default=80.0)
    args = ap.parse_args(argv)
    from xvae_fast.data.mnist import find_file, read_idx
    path = find_file(args.data, "train-images-idx3-ubyte")
    if path is None:
        ap.error(f"--data {args.data!r} has no train-images-idx3-ubyte[.gz]")
    x = torch.from_numpy(np.ascontiguousarray(read_idx(path))).float().div_(255).unsqueeze(1)
    seeds = parse_seeds(args.seeds)
    print("| pixel mean | dead runs | squared error of the live runs |\n|---|---:|---|")
    for output in args.outputs.split(","):
        losses = {s: last_loss(x, s, args.steps, args.likelihood, output) for s in seeds}
        dead = [s for s, v in losses.items() if v > args.dead_above]
        live = [v for s, v in losses.items() if s not in dead]
        span = f"{min(live):.1f}-{max(live):.1f}" if live else "-"
        print(f"| {output} | {len(dead)} of {len(seeds)} ({', '.join(map(str, dead)) or 'none'}) | {span} |",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
