"""The measurement behind the library's defaults (docs/choosing-defaults.md): named stage-2 setups,
each trained with several seeds, evaluated, and tabulated as mean ± std over the seeds.

A setup is a set of `python -m xvae_fast.train` flags. `default` is the library's defaults (no
flags); the others change one choice at a time (the KL objective, the stage-2 initialisation, the
plan, the likelihood), or are the paper's reading (`paper`: `--preset paper`) with one fix at a time,
or the standard VAE. The generation routing needs no retraining: every mixture X-VAE run is evaluated
with per-row and with per-coordinate routing. The ex-post reference (the stage-1 autoencoder decoding
per-row samples of the fitted prior) is evaluated once per stage 1. X-VAE runs of one seed and one
likelihood share one stage-1 autoencoder (`--stage1-from`), so their differences are stage 2's.

Runs live in OUT/seed<S>/<setup>; a finished run is reused, so running the command again (or with
more seeds, or from several processes with different --seeds) only adds what is missing; the table
is always computed from every run folder present for the requested seeds and setups.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import ConfigError, XVAEError

from ..ops.functional import ROUTINGS
DEFAULT_SEEDS = (42, 43, 44)
KL_WEIGHTS = ("1", "0.5", "0.25", "0.1", "0.05")


def setups_for(data: str) -> Dict[str, Tuple[str, List[str]]]:
    """{name: (what it is, train flags)} for the bundled dataset `data`."""
    from ..config import DEFAULT_LIKELIHOOD
    default = DEFAULT_LIKELIHOOD[data]
    lik = [n for n in {"digits": ["mse", "gaussian", "bernoulli"], "clusters": ["mse", "gaussian"]}.get(data, [])
           if n != default]
    s: Dict[str, Tuple[str, List[str]]] = {
        "default": ("X-VAE, library defaults", []),
        "vae": (f"standard VAE (default likelihood, {default})", ["--model", "vae"]),
        "paper": ("X-VAE as the paper reads (--preset paper)", ["--preset", "paper"]),
        "paper+ae": ("paper, stage 2 initialised from the AE", ["--preset", "paper", "--stage2-init", "ae"]),
        "paper+tight": ("paper, tight KL", ["--preset", "paper", "--kl", "tight"]),
        "paper+tight+ae": ("paper, tight KL, AE init", ["--preset", "paper", "--kl", "tight",
                                                         "--stage2-init", "ae"]),
        "kl-paper": ("defaults, but the paper's Eq. 18 KL", ["--kl", "paper"]),
        "kl-mixture": ("defaults, but the mixture (encoder-weight) KL", ["--kl", "mixture"]),
        "init-random": ("defaults, but a randomly initialised stage 2", ["--stage2-init", "random"]),
        "plan-full": ("defaults, but plan full", ["--plan", "full"]),
        "plan-interleaved": ("defaults, but plan interleaved", ["--plan", "interleaved"]),
        "plan-split-1/3": ("defaults, but plan split-1/3", ["--plan", "split-1/3"]),
        "single": ("defaults, but the single-Gaussian X-VAE", ["--plan", "single"]),
    }
    # stage 2's KL weight (issue 28: at the ELBO, stage 2 blurs the autoencoder it starts from)
    for w in KL_WEIGHTS:
        s[f"kl-weight-{w}"] = (f"defaults, but --kl-weight {w}", ["--kl-weight", w])
    s["vae-kl-weight-0.25"] = ("standard VAE, --kl-weight 0.25", ["--model", "vae", "--kl-weight", "0.25"])
    for name in lik:
        s[f"lik-{name}"] = (f"defaults, but --likelihood {name}", ["--likelihood", name])
        s[f"vae-{name}"] = (f"standard VAE, --likelihood {name}", ["--model", "vae", "--likelihood", name])
    return s


def _run_dir(out: str, seed: int, setup: str) -> str:
    return os.path.join(out, f"seed{seed}", setup.replace("/", "of"))


EVAL_DEFAULTS = dict(n_fake=2000, classifier_steps=None)


def _eval(run_dir: str, model: str, routing: Optional[str], noise: bool = False,
          settings: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """The headline offline metrics of one run (cached next to the run, keyed by model, routing and
    whether samples carry the decoder noise)."""
    from ..evaluation.headline import evaluate_cached, headline_metrics
    from ..evaluation.protocol import Protocol
    from ..evaluation.runner import EvalOptions
    st = {**EVAL_DEFAULTS, **(settings or {})}
    opts = EvalOptions(alphas=[], figures=False, progress=False, model=model,
                       classifier_steps=st["classifier_steps"],
                       protocol=Protocol(routing=routing, decoder_noise=noise, n_fake=st["n_fake"]))
    name = f"sweep_eval_{model}_{routing or 'run'}{'_noise' if noise else ''}"
    return headline_metrics(evaluate_cached(run_dir, opts, name))


def run_sweep(data: str, out: str, seeds: Sequence[int], setups: Sequence[str],
              extra: Sequence[str] = (), overwrite: bool = False, verbose: bool = True,
              train: bool = True, eval_settings: Optional[Dict[str, Any]] = None,
              dataset: Optional[str] = None) -> Dict[str, Any]:
    """Train (or reuse) and evaluate every (seed, setup); returns the raw per-seed records. `dataset`
    is the --dataset spec when it is not `data` itself (mnist:DIR)."""
    from ..train import applicable_flags, parse_config
    from ..training.runs import train_or_reuse
    table = setups_for(data)
    unknown = [s for s in setups if s not in table]
    if unknown:
        raise ConfigError(f"unknown setup(s) {', '.join(map(repr, unknown))}; choose from "
                          f"{', '.join(table)}")
    records: Dict[str, Dict[str, Any]] = {}
    for seed in seeds:
        stage1: Dict[str, str] = {}    # likelihood -> the run that trained this seed's stage 1
        for setup in setups:
            run_dir = _run_dir(out, seed, setup)
            argv = (["--dataset", dataset or data, "--seed", str(seed), "--out", run_dir, "--no-progress"]
                    + list(table[setup][1]) + list(extra))
            cfg, explicit = parse_config(applicable_flags(argv))
            from ..config import resolve
            resolved = resolve(cfg)
            group = resolved.likelihood
            if resolved.model == "xvae" and group in stage1:
                cfg = cfg.replace(stage1_from=stage1[group])
                explicit = set(explicit) | {"stage1_from"}
            if not train and not os.path.isfile(os.path.join(run_dir, "summary.json")):
                continue
            t0 = time.time()
            if verbose:
                print(f"[sweep] seed {seed} {setup}: {' '.join(table[setup][1]) or '(defaults)'}",
                      file=sys.stderr, flush=True)
            summary, status, _ = train_or_reuse(cfg, explicit, overwrite=overwrite, verbose=False)
            if resolved.model == "xvae" and group not in stage1:
                stage1[group] = run_dir
            rec: Dict[str, Any] = {"seed": seed, "setup": setup, "run": run_dir, "status": status,
                                   "likelihood": summary.get("likelihood"),
                                   "units": summary.get("objective_units"),
                                   "test_objective": summary["test"]["loss"],
                                   "test_kl": summary["test"]["kl"],
                                   "test_kl_cat": summary["test"].get("kl_cat"),
                                   "test_recon": summary["test"]["recon"]}
            mixture = resolved.model == "xvae" and resolved.option("plan") != "single"
            for routing in (ROUTINGS if mixture else (None,)):
                m = _eval(run_dir, "vae", routing, settings=eval_settings)
                key = routing or "per-row"
                rec.setdefault("routings", {})[key] = m
            if data == "clusters":     # the model's p(x): per-row samples with the decoder noise
                rec["routings"]["noise"] = _eval(run_dir, "vae", "per-row" if mixture else None,
                                                 noise=True, settings=eval_settings)
            if resolved.model == "xvae":
                rec["stage1"] = stage1[group]
                if stage1[group] == run_dir:    # one ex-post reference per stage 1
                    rec["expost"] = _eval(run_dir, "expost", "per-row", settings=eval_settings)
            records[f"{seed}/{setup}"] = rec
            if verbose:
                head = rec["routings"].get(resolved.option("routing") or "per-row", {})
                print(f"[sweep] seed {seed} {setup}: {status}, test objective "
                      f"{rec['test_objective']:.4g}, sample FD {head.get('fd_samples', float('nan')):.4g}"
                      f" ({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)
    return records


def _ms(values: List[float], digits: int = 3) -> str:
    v = [x for x in values if x is not None and math.isfinite(x)]
    if not v:
        return "–"
    fmt = (lambda x: f"{x:.{digits}g}") if max(abs(x) for x in v) < 1e4 else (lambda x: f"{x:.0f}")
    if len(v) == 1:
        return fmt(v[0])
    return f"{fmt(float(np.mean(v)))} ± {fmt(float(np.std(v, ddof=1)))}"


def aggregate(records: Dict[str, Any], setups: Sequence[str]) -> List[Dict[str, Any]]:
    """One row per setup (and one ex-post row per likelihood seen), the per-seed values in lists."""
    rows: List[Dict[str, Any]] = []
    expost: Dict[str, Dict[str, Dict[int, Dict[str, float]]]] = {}
    for setup in setups:
        recs = [r for r in records.values() if r["setup"] == setup]
        if not recs:
            continue
        row: Dict[str, Any] = {"setup": setup, "seeds": [r["seed"] for r in recs],
                               "likelihood": recs[0]["likelihood"], "units": recs[0]["units"]}
        for k in ("test_objective", "test_recon", "test_kl", "test_kl_cat"):
            row[k] = [r[k] for r in recs]
        for routing in ROUTINGS + ("noise",):
            ms = [r["routings"].get(routing) for r in recs]
            if all(m is not None for m in ms):
                row[routing] = {k: [m.get(k) for m in ms] for k in ms[0]}
        rows.append(row)
        for r in recs:
            if "expost" in r:
                expost.setdefault(r["likelihood"], {})[r["seed"]] = r["expost"]
    for lik, by_seed in expost.items():
        ms = [by_seed[s] for s in sorted(by_seed)]
        rows.append({"setup": f"expost ({lik})", "seeds": sorted(by_seed), "likelihood": lik,
                     "units": None, "per-row": {k: [m.get(k) for m in ms] for k in ms[0]}})
    return rows


def to_markdown(rows: List[Dict[str, Any]], data: str, setups_table) -> str:
    clusters = any("in_modes" in (r.get("per-row") or {}) for r in rows)
    head = ["setup", "test objective", "Rec", "KL", "sample FD (per-row)", "sample FD (per-coord)",
            "recon FD", "precision", "recall"]
    if clusters:
        head += ["in modes (per-row)", "in modes (per-coord)", "min mode share (per-row)",
                 "+ decoder noise: sample FD", "recall", "in modes"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        pr, pc = r.get("per-row") or {}, r.get("per-coordinate") or {}
        cells = [r["setup"], _ms(r.get("test_objective", [])), _ms(pr.get("rec", [])),
                 _ms(r.get("test_kl", [])), _ms(pr.get("fd_samples", [])), _ms(pc.get("fd_samples", [])),
                 _ms(pr.get("fd_recon", [])), _ms(pr.get("precision", [])), _ms(pr.get("recall", []))]
        if clusters:
            pn = r.get("noise") or {}
            cells += [_ms(pr.get("in_modes", [])), _ms(pc.get("in_modes", [])),
                      _ms(pr.get("min_mode_share", [])), _ms(pn.get("fd_samples", [])),
                      _ms(pn.get("recall", [])), _ms(pn.get("in_modes", []))]
        lines.append("| " + " | ".join(cells) + " |")
    fd = "FD-LeNet" if data in ("digits", "mnist") else "FD-MLP"
    seeds = sorted({s for r in rows for s in r["seeds"]})
    notes = ["", f"Mean ± std over seeds {', '.join(map(str, seeds))}. Test objective: the run's negative "
             "ELBO per example in its likelihood's units (bernoulli and gaussian: nats; mse: squared "
             "error + KL), so compare it only between rows of one likelihood. Rec: squared error summed "
             "per test example (the paper's Rec, comparable across likelihoods). Sample / recon FD: "
             f"offline Fréchet distance in the features of a classifier trained on the labels ({fd}; "
             "not Inception FID), 2000 samples at alpha 1 vs up to 1000 test examples. Precision / "
             "recall: k-NN manifolds (k = 3) in the same features, per-row samples."]
    if clusters:
        notes.append("In modes: the fraction of 2000 decoded samples within 3 standard deviations of a "
                     "mode; min mode share: the smallest of the three modes' shares of the samples "
                     "(1/3 when balanced). + decoder noise: per-row samples drawn from p(x | z) (the "
                     "likelihood's noise added to the decoded mean: variance gamma for gaussian, 1/2 for "
                     "mse), i.e. the model's own density rather than its decoded means.")
    notes.append("Ex-post rows: the stage-1 autoencoder of the X-VAE runs of that likelihood decoding "
                 "per-row samples of the prior fitted on its latents (no stage 2).")
    notes += ["", "Setups:", ""] + [f"- `{n}`: {d} (`{' '.join(f) or 'no flags'}`)"
                                    for n, (d, f) in setups_table.items()
                                    if any(r["setup"] == n for r in rows)]
    return "\n".join(lines + notes) + "\n"


def _plot(records, rows, data: str, out: str) -> Optional[str]:
    """The first seed's per-row samples of every setup (scatter for clusters, grids for digits)."""
    import torch
    from ..sample import sample_run
    seed = min(r["seed"] for r in records.values())
    runs = [(r["setup"], r["run"]) for r in records.values() if r["seed"] == seed]
    if not runs:
        return None
    path = os.path.join(out, "samples_by_setup.png")
    if data == "clusters":
        from ..data.builtin import make_clusters
        from ..plots import save_scatter
        ref, _ = make_clusters(600, seed=1)
        sets = [sample_run(run, 1000, routing=None, seed=0)[0].numpy() for _, run in runs]
        save_scatter(sets, [name for name, _ in runs], path, f"samples per setup (seed {seed}; grey: data)",
                     panels=True, reference=ref)
    else:
        from ..plots import save_image_rows
        sets = [sample_run(run, 16, routing=None, seed=0)[0] for _, run in runs]
        save_image_rows(sets, [name for name, _ in runs], path, f"samples per setup (seed {seed}, alpha 1)")
    return path


def write_results(out: str, payload: Dict[str, Any], markdown: str) -> None:
    """A runner's results.json (every record) and results.md (the tables) in `out`."""
    from ..atomic_file import write_json
    write_json(payload, os.path.join(out, "results.json"))
    with open(os.path.join(out, "results.md"), "w", encoding="utf-8") as f:
        f.write(markdown)


def run_report(out: str, body: Callable[[], str]) -> int:
    """A runner's command-line tail: `body` trains what is missing and writes the results, returning
    the tables it prints. Bad input exits 2; Ctrl-C exits 130 (the runs resume on the next call)."""
    try:
        md = body()
    except XVAEError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; run the same command again to continue", file=sys.stderr)
        return 130
    print(md)
    print(f"wrote {os.path.join(out, 'results.md')} and results.json")
    return 0


def main_for(data: str, argv: Optional[List[str]] = None, doc: str = "") -> int:
    table = setups_for(data)
    p = argparse.ArgumentParser(prog=f"python -m xvae_fast.experiments.{data}", description=doc,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="setups: " + ", ".join(table) + ". Other options are passed to "
                                "python -m xvae_fast.train for every run (e.g. --epochs-vae 20).")
    p.add_argument("--out", default=f"runs/sweep-{data}", help="folder for the runs and the table")
    p.add_argument("--seeds", default=",".join(map(str, DEFAULT_SEEDS)), help="comma-separated seeds "
                   "(default 42,43,44)")
    p.add_argument("--seed", type=int, default=None, help="a single seed (same as --seeds S)")
    p.add_argument("--setups", default="all", help="comma-separated setups (default: all)")
    p.add_argument("--overwrite", action="store_true", help="retrain runs that are already there")
    p.add_argument("--report-only", action="store_true", help="tabulate the runs already there; train "
                   "nothing")
    p.add_argument("--n-fake", type=int, default=EVAL_DEFAULTS["n_fake"], metavar="N",
                   help="samples per evaluation (default 2000)")
    p.add_argument("--classifier-steps", type=int, default=None, metavar="N",
                   help="training steps of the offline feature classifier (default: its recipe)")
    p.add_argument("--quiet", action="store_true")
    if data == "mnist":
        p.add_argument("--data", default="data/mnist", metavar="DIR", help="the MNIST IDX files "
                       "(default data/mnist)")
    args, extra = p.parse_known_args(argv)
    dataset = f"mnist:{args.data}" if data == "mnist" else None
    if "--dataset" in extra:
        print("error: the runner sets --dataset" + (" (use --data DIR)" if dataset else ""),
              file=sys.stderr)
        return 2
    try:
        seeds = [args.seed] if args.seed is not None else [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        print(f"error: --seeds must be comma-separated integers, got {args.seeds!r}", file=sys.stderr)
        return 2
    setups = list(table) if args.setups == "all" else [s.strip() for s in args.setups.split(",") if s.strip()]
    if not seeds or not setups:
        print("error: --seeds and --setups must each name at least one", file=sys.stderr)
        return 2
    if args.n_fake < 10 or (args.classifier_steps is not None and args.classifier_steps < 1):
        print("error: --n-fake must be >= 10 and --classifier-steps >= 1", file=sys.stderr)
        return 2
    def body() -> str:
        os.makedirs(args.out, exist_ok=True)
        records = run_sweep(data, args.out, seeds, setups, extra, args.overwrite, not args.quiet,
                            train=not args.report_only,
                            eval_settings=dict(n_fake=args.n_fake, classifier_steps=args.classifier_steps),
                            dataset=dataset)
        rows = aggregate(records, setups)
        md = to_markdown(rows, data, table)
        write_results(args.out, {"data": data, "seeds": seeds, "setups": {k: table[k] for k in setups},
                                 "extra": list(extra), "records": records, "rows": rows},
                      f"# {data}: stage-2 setups\n\n{md}")
        if records:
            _plot(records, rows, data, args.out)
        return md
    return run_report(args.out, body)
