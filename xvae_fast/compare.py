"""`python -m xvae_fast.compare --data digits|clusters [--seed 42] [--epochs N] [--out DIR]`: train every
baseline of the paper and every X-VAE configuration on one dataset with one seed, and tabulate them.

Rows (the paper's Table 9 order): the standard VAE, VampPrior, hierarchical, MoG-prior and GM-VAE
baselines, then X-VAE single-Gaussian and the routed-transport configurations (interleaved, the four
(K-1)+1 routings, transport K, 2K/3 and K/3). Every run uses the same trainer, data, split, latent size,
seed, batch size, learning rate and stage-2 epoch budget; the X-VAE runs share one stage-1
autoencoder (trained by the first X-VAE run, reused by the others with --stage1-from).

Writes in --out (one run folder per row, plus):
  comparison.md    final-epoch train / test objective, test reconstruction and test KL (paper Tables
                   1 and 9) and trainable parameters, total and prior (paper Table 4)
  comparison.csv   the same, with the train terms, the KL parts, steps, seconds and run folders
  comparison.json  the rows as a list of objects
Finished runs already in --out are reused, unfinished ones resumed, so an interrupted comparison
continues where it stopped; a run folder trained with other options is an error (pass --overwrite to
retrain everything, or choose another --out). Options this command does not know are passed to
`python -m xvae_fast.train` for every run (e.g. --latent 8, --device cuda, --batch-size 64).
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

from .config import RUNTIME_KEYS, TrainConfig, resolve
from .errors import ConfigError, NonFiniteLossError, XVAEError

# (key, model, plan, row name as in the paper's tables)
ENTRIES = [
    ("vae", "vae", None, "Standard VAE"),
    ("vamp", "vamp", None, "VampPrior VAE"),
    ("hierarchical", "hierarchical", None, "Hierarchical VAE"),
    ("mog", "mog", None, "Standard MoG VAE"),
    ("gmvae", "gmvae", None, "GM-VAE"),
    ("single", "xvae", "single", "X-VAE single-Gaussian"),
    ("interleaved", "xvae", "interleaved", "X-VAE interleaved"),
    ("k1-pp-np", "xvae", "k1-pp-np", "X-VAE (K-1)+1 (pi^p, N^p)"),
    ("k1-pq-np", "xvae", "k1-pq-np", "X-VAE (K-1)+1 (pi^q, N^p)"),
    ("k1-pp-nq", "xvae", "k1-pp-nq", "X-VAE (K-1)+1 (pi^p, N^q)"),
    ("k1-pq-nq", "xvae", "k1-pq-nq", "X-VAE (K-1)+1 (pi^q, N^q)"),
    ("full", "xvae", "full", "X-VAE transport K (full)"),
    ("split-2/3", "xvae", "split-2/3", "X-VAE transport 2K/3 (split-2/3)"),
    ("split-1/3", "xvae", "split-1/3", "X-VAE transport K/3 (split-1/3)"),
]
KEYS = [e[0] for e in ENTRIES]
BASELINE_KEYS = KEYS[:5]
# --quick: a few steps per run, no figures (tests, smoke checks)
QUICK = ["--limit", "240", "--batch-size", "64", "--epochs-ae", "1", "--epochs-vae", "1",
         "--em-n-init", "1", "--no-outputs"]
CSV_COLUMNS = ["key", "model", "plan", "name", "status", "train_objective", "test_objective",
               "test_recon", "test_kl", "train_recon", "train_kl", "test_kl_cat", "test_kl_gauss",
               "params_total", "params_prior", "stage1_params", "steps", "seconds", "run"]
# options that may differ between a reused run and this comparison
IGNORED_ON_REUSE = set(RUNTIME_KEYS) | {"stage1_from"}


def _run_dir(out: str, key: str) -> str:
    return os.path.join(out, key.replace("/", "of"))


def _argv(data: str, seed: int, key: str, epochs: Optional[int], epochs_ae: Optional[int], quick: bool,
          extra: Sequence[str], run_dir: str) -> List[str]:
    _, model, plan, _ = ENTRIES[KEYS.index(key)]
    argv = ["--dataset", data, "--seed", str(seed), "--model", model, "--out", run_dir, "--no-progress"]
    if plan is not None:
        argv += ["--plan", plan]
    if quick:
        argv += QUICK
    if epochs is not None:
        argv += ["--epochs-vae", str(epochs)]
    if epochs_ae is not None:
        argv += ["--epochs-ae", str(epochs_ae)]
    return argv + list(extra)


def _read_json(path: str):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _status_of(run_dir: str, intended: TrainConfig) -> str:
    """'new', 'done' (reuse), or 'resume'; raises if the folder holds a run with other options."""
    from .training import checkpoint as ckpt
    if not os.path.exists(os.path.join(run_dir, ckpt.CHECKPOINT)):
        return "new"
    ck = ckpt.load_checkpoint(run_dir)
    saved = TrainConfig.from_saved(ck["config"])
    diffs = [f"{k} (run: {getattr(saved, k)!r}, comparison: {getattr(intended, k)!r})"
             for k in TrainConfig.field_names()
             if k not in IGNORED_ON_REUSE and getattr(saved, k) != getattr(intended, k)]
    if diffs:
        raise ConfigError(f"{run_dir!r} holds a run trained with other options: {'; '.join(diffs)}. "
                          "Pass --overwrite to retrain, or choose another --out")
    if ck["stage"] == "done" and os.path.isfile(os.path.join(run_dir, "summary.json")):
        return "done"
    return "resume"


def _row(key: str, summary: Optional[Dict[str, Any]], run_dir: str, status: str) -> Dict[str, Any]:
    _, model, plan, name = ENTRIES[KEYS.index(key)]
    row: Dict[str, Any] = {"key": key, "model": model, "plan": plan or "", "name": name,
                           "status": status, "run": run_dir}
    if summary is None:
        return row
    tr, te = summary.get("train") or {}, summary.get("test") or {}
    params = summary.get("params") or {}
    row.update({
        "train_objective": tr.get("loss"), "test_objective": te.get("loss"),
        "test_recon": te.get("recon"), "test_kl": te.get("kl"),
        "train_recon": tr.get("recon"), "train_kl": tr.get("kl"),
        "test_kl_cat": te.get("kl_cat"), "test_kl_gauss": te.get("kl_gauss"),
        "params_total": params.get("total"), "params_prior": params.get("prior"),
        "stage1_params": summary.get("stage1_params"), "steps": summary.get("steps"),
        "seconds": summary.get("seconds"),
    })
    return row


def run_comparison(data: str = "digits", seed: int = 42, out: Optional[str] = None,
                   models: Optional[Sequence[str]] = None, epochs: Optional[int] = None,
                   epochs_ae: Optional[int] = None, quick: bool = False, extra: Sequence[str] = (),
                   overwrite: bool = False, verbose: bool = True) -> List[Dict[str, Any]]:
    """Train (or reuse) every selected model and return the table's rows; also writes
    comparison.md / .csv / .json in `out`."""
    from .train import parse_config
    from .training import train
    keys = list(KEYS if models is None else models)
    unknown = [k for k in keys if k not in KEYS]
    if unknown:
        raise ConfigError(f"unknown model(s) {', '.join(map(repr, unknown))} for the comparison; choose "
                          f"from {', '.join(KEYS)}")
    keys = [k for k in KEYS if k in keys]  # the paper's row order
    out = out or os.path.join("runs", f"compare-{data.split(':')[0]}-seed{seed}")
    os.makedirs(out, exist_ok=True)
    rows: List[Dict[str, Any]] = []
    stage1: Optional[str] = None
    for key in keys:
        run_dir = _run_dir(out, key)
        argv = _argv(data, seed, key, epochs, epochs_ae, quick, extra, run_dir)
        is_xvae = ENTRIES[KEYS.index(key)][1] == "xvae"
        if is_xvae and stage1 is not None:
            argv += ["--stage1-from", stage1]
        cfg, explicit = parse_config(argv)
        intended = resolve(cfg)
        status = "new" if overwrite else _status_of(run_dir, intended)
        if verbose:
            print(f"[compare] {key}: {'reusing the finished run' if status == 'done' else status} "
                  f"({run_dir})", file=sys.stderr, flush=True)
        t0 = time.time()
        try:
            if status == "new":
                result = train(cfg.replace(overwrite=True), explicit=explicit | {"overwrite"},
                               verbose=verbose)
                summary = result.summary
            elif status == "resume":
                result = train(TrainConfig(resume=run_dir, progress=False),
                               explicit={"resume", "progress"}, verbose=verbose)
                summary = result.summary
            else:
                summary = _read_json(os.path.join(run_dir, "summary.json"))
        except NonFiniteLossError as exc:
            if verbose:
                print(f"[compare] {key} failed: {exc}", file=sys.stderr, flush=True)
            rows.append(_row(key, None, run_dir, f"failed: {str(exc).split(';')[0]}"))
            _write_tables(rows, out, data, seed)
            continue
        if summary is None:
            summary = _read_json(os.path.join(run_dir, "summary.json"))
        if is_xvae and stage1 is None:
            stage1 = run_dir
        rows.append(_row(key, summary, run_dir, "reused" if status == "done" else "trained"))
        if verbose:
            print(f"[compare] {key}: test objective {summary['test']['loss']:.4g} "
                  f"({time.time() - t0:.1f} s)", file=sys.stderr, flush=True)
        _write_tables(rows, out, data, seed)  # after every run, so a partial table is always there
    return rows


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return f"{v:.4g}"


def to_markdown(rows: List[Dict[str, Any]], data: str, seed: int) -> str:
    done = [r for r in rows if r.get("test_objective") is not None]
    best = min((r["test_objective"] for r in done), default=None)
    lines = [f"# Baselines and X-VAE on {data} (seed {seed})", "",
             "Final-epoch objective per example (reconstruction, the squared error summed over the "
             "example, plus KL), as in the paper's Tables 1 and 9: train and test objective, and the "
             "test reconstruction and KL terms; lowest test objective in bold. Trainable parameters of "
             "the generative model, total and prior, as in the paper's Table 4.", "",
             "| Model | train | test | recon | KL | params total | params prior |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        if r.get("test_objective") is None:
            lines.append(f"| {r['name']} | {r['status']} | | | | | |")
            continue
        test = _fmt(r["test_objective"])
        if best is not None and r["test_objective"] == best:
            test = f"**{test}**"
        lines.append(f"| {r['name']} | {_fmt(r['train_objective'])} | {test} | {_fmt(r['test_recon'])} | "
                     f"{_fmt(r['test_kl'])} | {r['params_total']} | {r['params_prior']} |")
    stage1 = next((r["stage1_params"] for r in rows if r.get("stage1_params")), None)
    lines += ["",
              "KL: the X-VAE routed-transport rows add the categorical and per-component Gaussian terms "
              "(paper Eq. 18); VampPrior, MoG and GM-VAE (Gaussian part) report the Monte Carlo "
              "estimate log q(z|x) - log p(z), which can be negative. Prior parameters: VampPrior "
              "pseudo-inputs, the MoG mixture, the hierarchical conditional prior network, the GM-VAE "
              "per-cluster prior heads; X-VAE's fitted prior is a frozen buffer (0)."]
    if stage1:
        lines.append(f"X-VAE also pretrains a stage-1 autoencoder ({stage1} parameters), shared by its "
                     "rows and not counted, as in the paper's Table 4.")
    return "\n".join(lines) + "\n"


def _write_tables(rows: List[Dict[str, Any]], out: str, data: str, seed: int) -> None:
    def atomic(path: str, write) -> None:
        tmp = f"{path}.tmp-{os.getpid()}"
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            write(f)
        os.replace(tmp, path)

    atomic(os.path.join(out, "comparison.md"), lambda f: f.write(to_markdown(rows, data, seed)))

    def write_csv(f):
        w = csv.DictWriter(f, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in CSV_COLUMNS})
    atomic(os.path.join(out, "comparison.csv"), write_csv)
    atomic(os.path.join(out, "comparison.json"),
           lambda f: json.dump({"data": data, "seed": seed, "rows": rows}, f, indent=2, default=float))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m xvae_fast.compare", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="digits", metavar="SPEC", help="dataset, as --dataset of "
                   "xvae_fast.train: digits (default), clusters, mnist:DIR, celeba:DIR, ...")
    p.add_argument("--seed", type=int, default=42, help="seed of every run (default 42, paper Table 5)")
    p.add_argument("--epochs", type=int, default=None, metavar="N", help="training epochs of every "
                   "model (the VAE stage; default per dataset, as xvae_fast.train)")
    p.add_argument("--epochs-ae", type=int, default=None, metavar="N", help="X-VAE stage-1 epochs "
                   "(default per dataset)")
    p.add_argument("--models", default=",".join(KEYS), metavar="LIST", help="comma-separated subset "
                   f"of: {', '.join(KEYS)} (default: all)")
    p.add_argument("--out", default=None, metavar="DIR", help="folder for the runs and the tables "
                   "(default runs/compare-<data>-seed<seed>)")
    p.add_argument("--quick", action="store_true", help="a tiny budget (240 examples, 1 epoch per "
                   "stage, no figures): a smoke test of the whole comparison")
    p.add_argument("--overwrite", action="store_true", help="retrain every run, even finished ones")
    p.add_argument("--quiet", action="store_true", help="less logging")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args, extra = build_parser().parse_known_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    try:
        rows = run_comparison(args.data, args.seed, args.out, models, args.epochs, args.epochs_ae,
                              args.quick, extra, args.overwrite, verbose=not args.quiet)
    except XVAEError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; run the same command again to continue", file=sys.stderr)
        return 130
    out = args.out or os.path.join("runs", f"compare-{args.data.split(':')[0]}-seed{args.seed}")
    print(to_markdown(rows, args.data, args.seed))
    print(f"wrote {os.path.join(out, 'comparison.md')} and comparison.csv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
