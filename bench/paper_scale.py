"""The X-VAE paper's own scale, timed phase by phase in one run: MNIST (28x28, the Table 5 networks,
K = 64, batch 128) through the library's trainer (stage-1 epochs, the EM prior fit, stage-2 epochs,
the outputs), beside the peers a user would otherwise write:

- `lean fp32`: the leanest plain-PyTorch float32 epoch of the same autoencoder (the library's
  parameter count is checked): in-memory tensors, a fresh permutation, Adam, the Bernoulli
  likelihood summed per image; no test pass, no checkpoint;
- `lean bf16` (with --lean-bf16): the same loop under bfloat16 autocast;
- the prior fit by scikit-learn's GaussianMixture (the reference fitter) on the same stage-1 codes,
  with the same seed, initialisations, variance floor and tolerance as the library's torch EM.

    python bench/paper_scale.py --data ../shared/data/mnist [--epochs-ae 10 --epochs-vae 15]
        [--device cpu|cuda] [--precision fp32|bf16|auto] [--channels-last auto|on|off]
        [--threads N] [--lean-bf16] [--limit N] [--out bench/results] [--tag NAME]

The trainer's epoch times are the training loop alone (metrics.json `time_s`); the test pass after
each epoch is `eval_s`; a library epoch in the ratio below is the sum of both, so the ratio charges the
library for work the lean loop does not do. Writes OUT/paper-scale-<device>[-TAG].json and .md.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from report import write_report  # noqa: E402


def lean_network(K: int) -> nn.Module:
    """The paper's Table 5 MNIST autoencoder, written out as a user would."""
    enc = nn.Sequential(nn.Conv2d(1, 32, 4, 2, 1), nn.ReLU(), nn.Conv2d(32, 64, 4, 2, 1), nn.ReLU(),
                        nn.Conv2d(64, 128, 3, 2, 1), nn.ReLU(), nn.Flatten(), nn.Linear(2048, K))
    dec = nn.Sequential(nn.Linear(K, 2048), nn.ReLU(), nn.Unflatten(1, (128, 4, 4)),
                        nn.ConvTranspose2d(128, 64, 3, 2, 1), nn.ReLU(),
                        nn.ConvTranspose2d(64, 32, 4, 2, 1), nn.ReLU(),
                        nn.ConvTranspose2d(32, 1, 4, 2, 1))
    return nn.Sequential(enc, dec)


def lean_epoch(x: torch.Tensor, K: int, batch: int, device: torch.device, bf16: bool, seed: int = 0):
    """(seconds, final-quarter mean loss) of one epoch of the lean loop."""
    torch.manual_seed(seed)
    model = lean_network(K).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = x.to(device)
    order = torch.randperm(len(x), device=device)
    nb = (len(x) + batch - 1) // batch
    losses = []
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    for b in range(nb):
        xb = x[order[b * batch:(b + 1) * batch]]
        if bf16:
            with torch.autocast(device.type, dtype=torch.bfloat16):
                h = model(xb)
        else:
            h = model(xb)
        loss = F.binary_cross_entropy_with_logits(h.float(), xb, reduction="sum") / xb.shape[0]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.detach())
    sync()
    seconds = time.perf_counter() - t0
    tail = torch.stack(losses[-max(1, nb // 4):]).float().mean().item()
    return seconds, tail, sum(p.numel() for p in model.parameters())


def lean_step_medians(x: torch.Tensor, K: int, batch: int, device: torch.device, steps: int):
    """Median ms per step of the lean loop in fp32 and under bf16 autocast, timed in rotation: what
    bf16 buys on this device (an epoch of bf16 is too slow to time where it is emulated)."""
    from timing import interleaved_medians
    loops = {}
    for name, bf16 in (("fp32", False), ("bf16", True)):
        torch.manual_seed(0)
        model = lean_network(K).to(device)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        xb = x[:batch].to(device)

        def step(model=model, opt=opt, bf16=bf16):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                h = model(xb)
            loss = F.binary_cross_entropy_with_logits(h.float(), xb, reduction="sum") / xb.shape[0]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        loops[name] = step
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else None
    return {k: 1e3 * v for k, v in interleaved_medians(loops, steps, warmup=2, sync=sync).items()}


def library_run(args, run_dir: str):
    from xvae_fast.config import TrainConfig
    from xvae_fast.training.trainer import train
    cfg = TrainConfig(dataset=f"mnist:{args.data}", epochs_ae=args.epochs_ae, epochs_vae=args.epochs_vae,
                      device=args.device, precision=args.precision, channels_last=args.channels_last,
                      threads=args.threads, out=run_dir, overwrite=True, progress=False, seed=args.seed,
                      limit=args.limit)
    t0 = time.perf_counter()
    result = train(cfg, verbose=False)
    wall = time.perf_counter() - t0
    with open(os.path.join(run_dir, "metrics.json")) as f:
        history = json.load(f)
    with open(os.path.join(run_dir, "prior_fit.json")) as f:
        prior = json.load(f)
    return wall, result.summary, history, prior


def codes_of(run_dir: str, device: str) -> torch.Tensor:
    """The stage-1 latents of the training set, as the trainer's prior fit saw them."""
    from xvae_fast.run_loading import load_reference
    from xvae_fast.data.mnist import read_idx, find_file
    cfg, info, model, _ = load_reference(run_dir, "expost", device)
    import numpy as np
    x = np.array(read_idx(find_file(cfg.dataset.split(":", 1)[1], "train-images-idx3-ubyte")))
    x = torch.from_numpy(x).float().div_(255).unsqueeze(1)
    if cfg.limit:
        x = x[:cfg.limit]
    with torch.no_grad():
        z = torch.cat([model.ae.encode(x[i:i + 1024].to(device)).cpu() for i in range(0, len(x), 1024)])
    # the lean loop must be the same network: the same parameter count (likelihood has none)
    return z, sum(p.numel() for p in model.ae.parameters())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="folder with the MNIST IDX files")
    ap.add_argument("--epochs-ae", type=int, default=10)
    ap.add_argument("--epochs-vae", type=int, default=15)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "auto"])
    ap.add_argument("--channels-last", default="auto", choices=["auto", "on", "off"])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--lean-bf16", action="store_true", help="also time a whole lean epoch under bf16")
    ap.add_argument("--step-repeats", type=int, default=10, help="rounds of the fp32-vs-bf16 lean step "
                    "comparison (default 10)")
    ap.add_argument("--limit", type=int, default=None, help="train on the first N images (quick runs)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--keep-run", metavar="DIR", help="train into DIR and keep it (default: a temp dir)")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    ap.add_argument("--tag", default="")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    from xvae_fast.data.mnist import find_file, read_idx
    path = find_file(args.data, "train-images-idx3-ubyte")
    if path is None:
        ap.error(f"--data {args.data!r} has no train-images-idx3-ubyte[.gz]")
    import numpy as np
    x = torch.from_numpy(np.array(read_idx(path))).float().div_(255).unsqueeze(1)
    if args.limit:
        x = x[:args.limit]

    run_dir = args.keep_run or tempfile.mkdtemp(prefix="paper-scale-")
    try:
        wall, summary, history, prior = library_run(args, run_dir)
        lean = {"fp32": lean_epoch(x, 64, 128, device, False)}
        step_ms = lean_step_medians(x, 64, 128, device, args.step_repeats)
        if args.lean_bf16:
            lean["bf16"] = lean_epoch(x, 64, 128, device, True)
        from xvae_fast.models.prior_fit import fit_mixture
        z, ae_params = codes_of(run_dir, args.device)
        if ae_params != lean["fp32"][2]:
            raise SystemExit(f"the lean network has {lean['fp32'][2]} parameters, the library's "
                             f"autoencoder {ae_params}: not the same network")
        t0 = time.perf_counter()
        sk = fit_mixture(z, 64, seed=args.seed, backend="sklearn").report
        sk_seconds = time.perf_counter() - t0
    finally:
        if not args.keep_run:
            shutil.rmtree(run_dir, ignore_errors=True)

    from xvae_fast.training.precision import native_bf16
    native = native_bf16(device)
    ae = [r for r in history if r["stage"] == "ae"]
    vae = [r for r in history if r["stage"] == "vae"]
    med = lambda v: sorted(v)[len(v) // 2] if v else None  # noqa: E731
    ae_epoch = med([r["time_s"] + r.get("eval_s", 0.0) for r in ae])
    vae_epoch = med([r["time_s"] + r.get("eval_s", 0.0) for r in vae])
    phases = {
        "stage-1 epochs (sum)": sum(r["time_s"] for r in ae),
        "stage-1 test passes (sum)": sum(r.get("eval_s", 0.0) for r in ae),
        "prior fit (encode + EM)": prior["seconds"],
        "stage-2 epochs (sum)": sum(r["time_s"] for r in vae),
        "stage-2 test passes (sum)": sum(r.get("eval_s", 0.0) for r in vae),
        "outputs": summary.get("outputs_seconds", 0.0),
    }
    phases["rest (start-up, data, checkpoints)"] = wall - sum(phases.values())
    report = {
        "device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "precision": summary["precision"], "channels_last": summary["channels_last"],
        "epochs": [args.epochs_ae, args.epochs_vae], "n_train": len(x), "wall_seconds": wall,
        "phases": phases, "ae_epoch_seconds": ae_epoch, "vae_epoch_seconds": vae_epoch,
        "lean_epoch_seconds": {k: v[0] for k, v in lean.items()},
        "lean_tail_loss": {k: v[1] for k, v in lean.items()},
        "lean_step_ms": step_ms, "native_bf16": native,
        "params": lean["fp32"][2],
        "library_ae_last_train_recon": ae[-1]["train_recon"] if ae else None,
        "test_objective": summary["test"],
        "em": {"torch_seconds": prior["seconds"], "torch_log_likelihood": prior["log_likelihood"],
               "torch_n_iter": prior["n_iter"], "backend": prior.get("backend"),
               "sklearn_seconds": sk_seconds, "sklearn_log_likelihood": sk["log_likelihood"],
               "sklearn_n_iter": sk["n_iter"]},
    }
    report["ratios"] = {
        "lean fp32 epoch / library stage-1 epoch": report["lean_epoch_seconds"]["fp32"] / ae_epoch,
        "one library stage-1 epoch / prior fit": ae_epoch / prior["seconds"],
        "scikit-learn EM / library prior fit": sk_seconds / prior["seconds"],
    }
    report["ratios"]["lean step fp32 / lean step bf16"] = step_ms["fp32"] / step_ms["bf16"]
    if "bf16" in lean:
        report["ratios"]["lean fp32 / lean bf16 epoch"] = lean["fp32"][0] / lean["bf16"][0]
    stem = f"paper-scale-{device.type}" + (f"-{args.tag}" if args.tag else "")
    write_report(args.out, stem, report, to_markdown)
    print(to_markdown(report))
    return 0


def to_markdown(r) -> str:
    lines = [f"# Paper-scale MNIST X-VAE run ({r['device']}, {r['threads']} threads, "
             f"{r['cpu_capability']}, torch {r['torch']})", "",
             f"{r['epochs'][0]} + {r['epochs'][1]} epochs on {r['n_train']} images, precision "
             f"{r['precision']}, channels-last {r['channels_last']}: **{r['wall_seconds']:.0f} s wall**.", "",
             "| phase | seconds |", "|---|---:|"]
    lines += [f"| {k} | {v:.1f} |" for k, v in r["phases"].items()]
    lines += ["", "| epoch | seconds |", "|---|---:|",
              f"| library stage 1 (median, with its test pass) | {r['ae_epoch_seconds']:.1f} |",
              f"| library stage 2 (median, with its test pass) | {r['vae_epoch_seconds'] or 0:.1f} |"]
    lines += [f"| lean plain-PyTorch {k} | {v:.1f} |" for k, v in r["lean_epoch_seconds"].items()]
    sm = r["lean_step_ms"]
    lines += ["", f"Lean step, median of rounds in rotation: fp32 {sm['fp32']:.1f} ms, bf16 autocast "
              f"{sm['bf16']:.1f} ms (bfloat16 units on this device: {'yes' if r['native_bf16'] else 'no'})."]
    em = r["em"]
    lines += ["", "| prior fit | seconds | mean log-likelihood | EM iterations (best init) |",
              "|---|---:|---:|---:|",
              f"| library ({em['backend']}, with encoding) | {em['torch_seconds']:.1f} | "
              f"{em['torch_log_likelihood']:.4f} | {em['torch_n_iter']} |",
              f"| scikit-learn GaussianMixture | {em['sklearn_seconds']:.1f} | "
              f"{em['sklearn_log_likelihood']:.4f} | {em['sklearn_n_iter']} |", "",
              "| ratio | value |", "|---|---:|"]
    lines += [f"| {k} | {v:.2f}x |" for k, v in r["ratios"].items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
