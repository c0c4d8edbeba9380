"""Where X-VAE's stage 2 gains or loses sample quality: one run traced epoch by epoch (issue 28).

    python -m xvae_fast.experiments.stage2_trace --out runs/trace-digits -- --seed 42
    python -m xvae_fast.experiments.stage2_trace --out runs/trace-mnist --epochs 0,1,2,4,6 -- \
        --dataset mnist:../shared/data/mnist --epochs-ae 4 --epochs-vae 6

trains one X-VAE (the flags after `--` go to `xvae_fast.train`), keeps the stage-2 weights at the
chosen epochs (0: the initialisation, which for --stage2-init ae is the stage-1 autoencoder), and
measures at each of them, with the dataset's offline feature classifier (FD-LeNet on digits and MNIST):

- the Fréchet distance to the test set of reconstructions (decoded posterior means, and decoded
  posterior draws), of samples from the frozen prior (at alpha 1 and 0.8), and of samples from a
  mixture refitted on the current encoder's codes (on the posterior means, and on posterior draws:
  the aggregate posterior);
- the ex-post reference (the stage-1 autoencoder decoding the frozen prior): a constant line;
- in latent space: the mean posterior variance relative to the prior's within-component variance,
  the Fréchet distance between the codes (posterior means and posterior draws) and the frozen prior,
  and the test reconstruction and KL terms.

Writes trace.json and trace.md in --out (the run folder is --out/run).
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import sys
from typing import Any, Dict, List, Optional

import numpy as np
import torch

N_REAL, N_FAKE, SEED = 1000, 2000, 0


def _features(fc, x: torch.Tensor) -> np.ndarray:
    return fc.features(x.float().cpu())


def _fd(fc, real_f, x) -> float:
    from ..evaluation.frechet import frechet_distance_from_features
    return float(frechet_distance_from_features(real_f, _features(fc, x)))


def _latent_fd(a: torch.Tensor, b: torch.Tensor) -> float:
    from ..evaluation.frechet import frechet_distance_from_features
    return float(frechet_distance_from_features(a.double().numpy(), b.double().numpy()))


@torch.no_grad()
def _encode(vae, x: torch.Tensor, batch: int = 512):
    mus, lvs = [], []
    for s in range(0, len(x), batch):
        _, mu, lv = vae.encode(x[s:s + batch])
        mus.append(mu)
        lvs.append(lv)
    return torch.cat(mus), torch.cat(lvs)


@torch.no_grad()
def _decode(model, z: torch.Tensor, batch: int = 512) -> torch.Tensor:
    return torch.cat([model.decode(z[s:s + batch]) for s in range(0, len(z), batch)])


@torch.no_grad()
def measure(vae, ae, prior, cfg, fc, real_f, x_train, x_test, ops) -> Dict[str, Any]:
    from ..models.prior_fit import fit_mixture
    g = torch.Generator().manual_seed(SEED)
    vae.eval()
    out: Dict[str, Any] = {}
    mu_te, lv_te = _encode(vae, x_test)
    draw_te = mu_te + torch.exp(0.5 * lv_te) * torch.randn(mu_te.shape, generator=g)
    out["fd_recon_mean"] = _fd(fc, real_f, _decode(vae, mu_te[:N_REAL]))
    out["fd_recon_draw"] = _fd(fc, real_f, _decode(vae, draw_te[:N_REAL]))
    z = ops.sample_prior(prior, N_FAKE, 1.0, "per-row", generator=g)
    out["fd_samples"] = _fd(fc, real_f, _decode(vae, z.float()))
    mu_tr, lv_tr = _encode(vae, x_train)
    fit = fit_mixture(mu_tr, cfg.latent, seed=cfg.seed, n_init=cfg.model_options.em_n_init, max_iter=cfg.model_options.em_max_iter,
                      tol=cfg.model_options.em_tol, var_floor=cfg.model_options.em_var_floor, weight_floor=cfg.model_options.em_weight_floor)
    zr = ops.sample_prior(fit.prior, N_FAKE, 1.0, "per-row", generator=g)
    out["fd_refit"] = _fd(fc, real_f, _decode(vae, zr.float()))
    # ... and on posterior draws (the aggregate posterior itself)
    draws = mu_tr + torch.exp(0.5 * lv_tr) * torch.randn(mu_tr.shape, generator=g)
    fit = fit_mixture(draws, cfg.latent, seed=cfg.seed, n_init=cfg.model_options.em_n_init, max_iter=cfg.model_options.em_max_iter,
                      tol=cfg.model_options.em_tol, var_floor=cfg.model_options.em_var_floor, weight_floor=cfg.model_options.em_weight_floor)
    zr = ops.sample_prior(fit.prior, N_FAKE, 1.0, "per-row", generator=g)
    out["fd_refit_draws"] = _fd(fc, real_f, _decode(vae, zr.float()))
    z = ops.sample_prior(prior, N_FAKE, 0.8, "per-row", generator=g)
    out["fd_samples_a08"] = _fd(fc, real_f, _decode(vae, z.float()))
    # the aggregate posterior against the frozen prior, in latent space
    prior_z = ops.sample_prior(prior, len(mu_tr), 1.0, "per-row", generator=g).float()
    draw_tr = mu_tr + torch.exp(0.5 * lv_tr) * torch.randn(mu_tr.shape, generator=g)
    out["latent_fd_means"] = _latent_fd(mu_tr, prior_z)
    out["latent_fd_draws"] = _latent_fd(draw_tr, prior_z)
    within = (prior.weights[:, None] * prior.stds ** 2).sum(0)      # (K,)
    out["post_var_ratio"] = float((lv_tr.exp() / within).mean())
    out["code_var_ratio"] = float((mu_tr.var(0) / (prior.means.var(0) + within)).mean())
    out["test_recon"] = float(vae.likelihood.nll(vae.decoder(mu_te), x_test)) if hasattr(
        vae, "likelihood") else float("nan")
    if ae is not None and hasattr(vae, "kl_terms"):
        _, mu, lv = vae.encode(x_test)
        out["test_kl"] = float(vae.kl_terms(None, mu, lv)[0]) if vae.kl != "paper" else float("nan")
    return out


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    train_argv: List[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, train_argv = argv[:i], argv[i + 1:]
    p = argparse.ArgumentParser(prog="python -m xvae_fast.experiments.stage2_trace",
                                description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--epochs", metavar="E1,E2", help="stage-2 epochs to measure (default: 0, 1, 2, 3, "
                   "5 and every tenth to the last)")
    args = p.parse_args(argv)
    from ..evaluation.feature_classifier import get_classifier
    from ..models.expost import ExPostModel
    from ..train import parse_config
    from ..training.trainer import Trainer

    from ..config import resolve
    from ..errors import XVAEError
    try:
        cfg, explicit = parse_config(train_argv + ["--out", os.path.join(args.out, "run"), "--overwrite",
                                                   "--no-outputs", "--no-progress"])
        resolved = resolve(cfg)
        if resolved.model != "xvae" or resolved.option("plan") == "single":
            raise XVAEError("the trace follows a mixture X-VAE's stage 2 (--model xvae, not --plan single)")
        if args.epochs and not all(e.strip().isdigit() for e in args.epochs.split(",")):
            raise XVAEError(f"--epochs must be comma-separated non-negative integers, got {args.epochs!r}")
    except XVAEError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    os.makedirs(args.out, exist_ok=True)
    trainer = Trainer(cfg, explicit=explicit, verbose=False)
    cfg = trainer.cfg
    total = cfg.epochs_vae
    if args.epochs:
        wanted = sorted({int(e) for e in args.epochs.split(",")})
    else:
        wanted = sorted({0, 1, 2, 3, 5, total} | set(range(10, total + 1, 10)))
    wanted = [e for e in wanted if 0 <= e <= total]
    snaps: Dict[int, Dict[str, torch.Tensor]] = {}
    recipe = trainer.recipe
    begin, end = recipe.begin_epoch, recipe.end_epoch

    def on_begin(stage, epoch, tr):
        if stage.name == "vae" and epoch == 0 and 0 in wanted:
            snaps[0] = copy.deepcopy(recipe.modules["vae"].state_dict())
        begin(stage, epoch, tr)

    def on_end(stage, epoch, tr):
        end(stage, epoch, tr)
        if stage.name == "vae" and epoch + 1 in wanted:
            snaps[epoch + 1] = copy.deepcopy(recipe.modules["vae"].state_dict())

    recipe.begin_epoch, recipe.end_epoch = on_begin, on_end
    trainer.run()

    bundle = trainer.data
    fc = get_classifier(bundle)
    x_test = bundle.test.get_batch(torch.arange(len(bundle.test))).float()
    x_train = bundle.train.get_batch(torch.arange(len(bundle.train))).float()
    g = torch.Generator().manual_seed(SEED)
    real_idx = torch.randperm(len(x_test), generator=g)[:N_REAL]
    real_f = _features(fc, x_test[real_idx])
    x_test = x_test[real_idx]
    vae, ae = recipe.modules["vae"], recipe.modules["ae"]
    prior = vae.prior
    expost = ExPostModel(ae, prior, "per-row", recipe.ops).eval()
    z = recipe.ops.sample_prior(prior, N_FAKE, 1.0, "per-row", generator=torch.Generator().manual_seed(1))
    rows: List[Dict[str, Any]] = []
    fd_expost = _fd(fc, real_f, _decode(expost, z.float()))
    for e in sorted(snaps):
        vae.load_state_dict(snaps[e])
        r = {"epoch": e, **measure(vae, ae, prior, cfg, fc, real_f, x_train, x_test, recipe.ops),
             "fd_expost": fd_expost}
        rows.append(r)
        print(json.dumps(r), flush=True)
    with open(os.path.join(args.out, "trace.json"), "w", encoding="utf-8") as f:
        json.dump({"train_argv": train_argv, "rows": rows}, f, indent=1)
    cols = ["epoch", "fd_recon_mean", "fd_recon_draw", "fd_samples", "fd_refit", "fd_refit_draws", "fd_samples_a08", "fd_expost",
            "latent_fd_means", "latent_fd_draws", "post_var_ratio", "code_var_ratio", "test_recon",
            "test_kl"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(f"{r.get(c, float('nan')):.4g}" for c in cols) + " |")
    with open(os.path.join(args.out, "trace.md"), "w", encoding="utf-8") as f:
        f.write(f"flags: {' '.join(train_argv)}\n\n" + "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
