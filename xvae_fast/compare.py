"""`python -m xvae_fast.compare --data digits|clusters [--seed 42] [--epochs N] [--evaluate] [--out DIR]`:
train every baseline of the paper and every X-VAE configuration on one dataset with one seed, and
tabulate them.

Rows (the paper's Table 9 order): the standard VAE, VampPrior, hierarchical, MoG-prior and GM-VAE
baselines, then X-VAE single-Gaussian and the routed-transport configurations (interleaved, the four
(K-1)+1 routings, transport K, 2K/3 and K/3, and `matched`, the library's default plan), then the
ex-post reference (the X-VAE stage-1 autoencoder decoding samples of its fitted prior, no stage 2),
the row every two-stage model must beat. `--models related` (or `all`) adds the related systems
(docs/models.md): the Two-Stage VAE, its stage-1-only sampling (the reference its second stage must
beat, from the same run), and the UAE family with K sigma points: UAE, UT-VAE and the VAE with K
samples, all sampled ex post from a full-covariance mixture. Every run uses the same trainer, data, split, latent size,
likelihood, seed, batch size, learning rate and stage-2 epoch budget; the X-VAE rows use the library's
stage-2 defaults (or --preset paper, passed through) and share one stage-1 autoencoder (trained by the
first X-VAE run, reused by the others with --stage1-from).

Writes in --out (one run folder per row, plus):
  comparison.md    Table 1/9: final-epoch train / test objective, test reconstruction and test KL, in
                   the likelihood's units; Table 4: trainable parameters, total and prior; with
                   --evaluate, Table 2: Rec, the Fréchet distance of samples and of reconstructions
                   (offline FD-LeNet / FD-MLP; Inception FID and IS with --inception-weights),
                   precision / recall, and for the clusters the in-mode fraction and per-mode shares;
                   every row's FD-data headline (summary.json, comparable across likelihoods); on MNIST
                   and CelebA, "Beside the paper": the paper's Tables 4, 8 and 9 next to ours
  comparison.csv   the same, with the train terms, the KL parts, steps, seconds and run folders
  comparison.json  the rows as a list of objects
Finished runs already in --out are reused, unfinished ones resumed, so an interrupted comparison
continues where it stopped; a run folder trained with other options is an error (pass --overwrite to
retrain everything, or choose another --out). Options this command does not know are passed to
`python -m xvae_fast.train` for every run (e.g. --latent 8, --likelihood mse, --preset paper).
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import os
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .argv import CommandParser
from .atomic_file import atomic_open
from .errors import ConfigError, NonFiniteLossError, XVAEError
from .evaluation.report import provenance_line
from .outpaths import make_out_dir, remove_created

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
    ("matched", "xvae", "matched", "X-VAE matched (library default)"),
    ("expost", "expost", None, "Ex-post reference (X-VAE stage 1 + fitted prior)"),
    # the related systems (docs/models.md)
    ("twostage", "twostage", None, "Two-Stage VAE"),
    ("twostage-stage1", "twostage", None, "Two-Stage VAE, stage-1-only sampling"),
    ("uae", "uae", None, "UAE (sigma points, mean image, W, GP; ex-post GMM)"),
    ("utvae", "uae", None, "UT-VAE (sigma points, mean image, KL; ex-post GMM)"),
    ("vae-k", "uae", None, "VAE with K samples (UAE family; ex-post GMM)"),
    ("avae", "avae", None, "AVAE (KDE aggregate posterior)"),
    ("introprior", "introprior", None, "S-IntroVAE, learned mixture prior (IP, LC)"),
    ("introprior-sg", "introprior", None, "S-IntroVAE, N(0, I) prior (SG)"),
]
# rows trained with more than --model (the UAE ablation family)
ROW_ARGS = {"utvae": ["--uae-variant", "utvae"], "vae-k": ["--uae-variant", "vae"],
            "introprior-sg": ["--introprior-prior", "sg"]}
# rows that evaluate another row's run with a reference sampler: key -> (source row, sampler)
DERIVED = {"twostage-stage1": ("twostage", "stage1")}
KEYS = [e[0] for e in ENTRIES]
RELATED_KEYS = ["twostage", "twostage-stage1", "uae", "utvae", "vae-k", "avae", "introprior", "introprior-sg"]
PAPER_KEYS = [k for k in KEYS if k not in RELATED_KEYS]     # the default: the paper's tables
# --models accepts these group names beside row keys
GROUPS = {"paper": PAPER_KEYS, "related": RELATED_KEYS, "all": KEYS}
BASELINE_KEYS = KEYS[:5]
XVAE_KEYS = [e[0] for e in ENTRIES if e[1] == "xvae"]
# --quick: a few steps per run, no figures (tests, smoke checks)
QUICK = ["--limit", "240", "--batch-size", "64", "--epochs-ae", "1", "--epochs-vae", "1", "--epochs-game", "1",
         "--em-n-init", "1", "--no-outputs"]
EVAL_COLUMNS = ["rec", "fd_name", "fd_samples", "fd_recon", "fd_interp", "precision", "recall", "fid_samples",
                "fid_recon", "is_mean", "is_std", "in_modes", "mode_shares", "hist_kl", "jsd_sintro", "jsd",
                "modes_covered", "nll", "nll_se", "nll_k", "nll_binarized"]
CSV_COLUMNS = ["key", "model", "plan", "name", "status", "train_objective", "test_objective",
               "test_recon", "test_kl", "train_recon", "train_kl", "test_kl_cat", "test_kl_gauss",
               "likelihood", "units", "params_total", "params_prior", "stage1_params", "steps",
               "seconds", "fd_data"] + EVAL_COLUMNS + ["provenance", "run"]


def _run_dir(out: str, key: str) -> str:
    return os.path.join(out, key.replace("/", "of"))


def _argv(data: str, seed: int, key: str, epochs: Optional[int], epochs_ae: Optional[int], quick: bool,
          extra: Sequence[str], run_dir: str) -> List[str]:
    _, model, plan, _ = ENTRIES[KEYS.index(key)]
    argv = ["--dataset", data, "--seed", str(seed), "--model", model, "--out", run_dir, "--no-progress"]
    if plan is not None:
        argv += ["--plan", plan]
    argv += ROW_ARGS.get(key, [])
    if quick:
        argv += QUICK
    if epochs is not None:
        argv += ["--epochs-vae", str(epochs)]
    if epochs_ae is not None:
        argv += ["--epochs-ae", str(epochs_ae)]
    argv += list(extra)
    # --quick and --extra hold flags of some models only: each row gets those its model uses
    from .train import applicable_flags
    return applicable_flags(argv)


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
        "likelihood": summary.get("likelihood"), "units": summary.get("objective_units"),
        "params_total": params.get("total"), "params_prior": params.get("prior"),
        "stage1_params": summary.get("stage1_params"), "steps": summary.get("steps"),
        "seconds": summary.get("seconds"),
        # the run's headline: comparable across rows whatever their likelihood (training/headline.py)
        "fd_data": (summary.get("headline") or {}).get("value"),
        "provenance": provenance_line(summary.get("provenance")),
    })
    return row


def _expost_row(stage1_run: str, summary: Dict[str, Any]) -> Dict[str, Any]:
    """The ex-post reference: the stage-1 autoencoder of the X-VAE rows with the fitted prior. It has
    no ELBO (Table 1 stays empty); its parameters are the autoencoder's."""
    row = _row("expost", None, stage1_run, "from stage 1")
    n = summary.get("stage1_params")
    row.update({"likelihood": summary.get("likelihood"), "params_total": n, "params_prior": 0,
                "stage1_params": n, "fd_data": (summary.get("headline") or {}).get("expost")})
    return row


def _derived_row(key: str, run_dir: str, summary: Dict[str, Any]) -> Dict[str, Any]:
    """A reference sampler of another row's run (the Two-Stage VAE's stage-1-only sampling): no
    objective of its own (Table 1 stays empty), the sampler's parameters."""
    row = _row(key, None, run_dir, f"from {DERIVED[key][0]}")
    stages = summary.get("stages") or {}
    row.update({"likelihood": summary.get("likelihood"), "steps": summary.get("steps"),
                "stage_trained": ",".join(stages) or None})
    return row


@dataclasses.dataclass
class EvalSettings:
    """What `--evaluate` computes per row (offline metrics; Inception FID / IS with weights)."""
    inception_weights: Optional[str] = None
    n_real: int = 1000
    n_fake: int = 2000
    classifier_steps: Optional[int] = None
    device: str = "auto"
    nll: Optional[Any] = None      # evaluation.nll.NLLOptions: the NLL column (--nll)


def _evaluate(row: Dict[str, Any], settings: EvalSettings, verbose: bool) -> None:
    """Table 2's metrics of one row, computed by `evaluate` (cached next to the run)."""
    from .evaluation.headline import evaluate_cached, headline_metrics
    from .evaluation.protocol import Protocol
    from .evaluation.runner import EvalOptions
    model = "expost" if row["key"] == "expost" else DERIVED.get(row["key"], (None, "vae"))[1]
    proto = Protocol(n_real=settings.n_real, n_fake=settings.n_fake)
    opts = EvalOptions(alphas=[], figures=False, progress=False, model=model, protocol=proto,
                       inception_weights=settings.inception_weights, download=False,
                       classifier_steps=settings.classifier_steps, device=settings.device)
    if verbose:
        print(f"[compare] evaluating {row['key']}", file=sys.stderr, flush=True)
    if settings.nll is not None and model == "vae":
        from .evaluation.nll import NLLUndefinedError
        try:
            report = evaluate_cached(row["run"], dataclasses.replace(opts, nll=settings.nll),
                                     f"compare_eval_{model}")
        except NLLUndefinedError as exc:      # a model without a density: the other metrics only
            row["nll_note"] = str(exc)
            report = evaluate_cached(row["run"], opts, f"compare_eval_{model}")
    else:
        report = evaluate_cached(row["run"], opts, f"compare_eval_{model}")
    row.update(headline_metrics(report))
    row["eval_routing"] = report["protocol"]["routing"] if report.get("routing_applies") else None
    row["eval_n_fake"] = proto.n_fake


def run_comparison(data: str = "digits", seed: int = 42, out: Optional[str] = None,
                   models: Optional[Sequence[str]] = None, epochs: Optional[int] = None,
                   epochs_ae: Optional[int] = None, quick: bool = False, extra: Sequence[str] = (),
                   overwrite: bool = False, verbose: bool = True,
                   evaluate: Optional[EvalSettings] = None) -> List[Dict[str, Any]]:
    """Train (or reuse) every selected model, evaluate it when `evaluate` is given, and return the
    table's rows; also writes comparison.md / .csv / .json in `out`."""
    keys = list(PAPER_KEYS if models is None else models)
    keys = [k for key in keys for k in GROUPS.get(key, [key])]
    unknown = [k for k in keys if k not in KEYS]
    if unknown:
        raise ConfigError(f"unknown model(s) {', '.join(map(repr, unknown))} for the comparison; choose "
                          f"from {', '.join(KEYS)}")
    keys = [k for k in KEYS if k in keys]  # the paper's row order
    if "expost" in keys and not any(k in XVAE_KEYS for k in keys):
        raise ConfigError("the ex-post reference row comes from the X-VAE rows' stage-1 autoencoder; "
                          "select at least one X-VAE row (e.g. --models matched,expost)")
    for key, (source, _) in DERIVED.items():
        if key in keys and source not in keys:
            raise ConfigError(f"the {key} row evaluates the {source} row's run; select it too (e.g. "
                              f"--models {source},{key})")
    for flag, value in (("--epochs", epochs), ("--epochs-ae", epochs_ae)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ConfigError(f"{flag} must be a positive integer, got {value!r}: a comparison of "
                              "untrained models would report initialisations as results")
    _check_extra_applies(data, keys, list(extra))
    out = out or os.path.join("runs", f"compare-{data.split(':')[0]}-seed{seed}")
    created = make_out_dir(out, "--out")
    try:
        return _compare_rows(data, seed, out, keys, epochs, epochs_ae, quick, extra, overwrite, verbose,
                             evaluate)
    except XVAEError:
        remove_created(created, only_if_empty=True)   # nothing was compared: no empty --out left
        raise


def _check_extra_applies(data: str, keys: Sequence[str], extra: List[str]) -> None:
    """Each row gets the extra trainer flags its model uses; a flag that no selected row uses is an
    error, not silently dropped."""
    from .train import applicable_flags
    if not extra:
        return
    kept = set()
    for key in keys:
        model = ENTRIES[KEYS.index(key)][1]
        if model == "expost":
            continue
        kept.update(a for a in applicable_flags(["--model", model, "--dataset", data, *extra])
                    if a.startswith("--"))
    unused = [a for a in extra if a.startswith("--") and a not in kept]
    if unused:
        raise ConfigError(f"{unused[0]} is used by none of the selected rows ({', '.join(keys)}): each row "
                          "gets the trainer flags its model uses")


def _compare_rows(data, seed, out, keys, epochs, epochs_ae, quick, extra, overwrite, verbose,
                  evaluate) -> List[Dict[str, Any]]:
    from .train import parse_config
    from .training.runs import train_or_reuse
    rows: List[Dict[str, Any]] = []
    stage1: Optional[str] = None
    # the ex-post reference decodes samples of the mixture prior (any routed row's: they share stage 1
    # and its EM fit), or of the single Gaussian when only `single` ran
    expost_src: Optional[Tuple[str, Dict[str, Any]]] = None
    expost_mixture = False
    trained: Dict[str, Tuple[str, Dict[str, Any]]] = {}
    for key in keys:
        if key in DERIVED:
            source = DERIVED[key][0]
            if source not in trained:      # the source row failed
                rows.append(_row(key, None, "", f"no {source} run"))
                continue
            row = _derived_row(key, *trained[source])
        elif key == "expost":
            if expost_src is None:     # every X-VAE row failed
                rows.append(_row(key, None, "", "no stage 1"))
                continue
            row = _expost_row(*expost_src)
        else:
            run_dir = _run_dir(out, key)
            argv = _argv(data, seed, key, epochs, epochs_ae, quick, extra, run_dir)
            is_xvae = key in XVAE_KEYS
            if is_xvae and stage1 is not None:
                argv += ["--stage1-from", stage1]
            cfg, explicit = parse_config(argv)
            t0 = time.time()
            try:
                summary, status, _ = train_or_reuse(cfg, explicit, overwrite=overwrite, verbose=verbose)
            except NonFiniteLossError as exc:
                if verbose:
                    print(f"[compare] {key} failed: {exc}", file=sys.stderr, flush=True)
                rows.append(_row(key, None, run_dir, f"failed: {str(exc).split(';')[0]}"))
                _write_tables(rows, out, data, seed)
                continue
            if is_xvae and stage1 is None:
                stage1 = run_dir
            if is_xvae and (expost_src is None or (key != "single" and not expost_mixture)):
                expost_src, expost_mixture = (run_dir, summary), key != "single"
            row = _row(key, summary, run_dir, "reused" if status == "done" else "trained")
            trained[key] = (run_dir, summary)
            if verbose:
                print(f"[compare] {key}: {status}, test objective {summary['test']['loss']:.4g} "
                      f"({time.time() - t0:.1f} s)", file=sys.stderr, flush=True)
        if evaluate is not None:
            _evaluate(row, evaluate, verbose)
        rows.append(row)
        _write_tables(rows, out, data, seed)  # after every run, so a partial table is always there
    return rows


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return f"{v:.4g}"


def to_markdown(rows: List[Dict[str, Any]], data: str, seed: int) -> str:
    done = [r for r in rows if r.get("test_objective") is not None]
    # objectives compare only within one likelihood (and its units): bold the best per likelihood,
    # and say each row's when the rows differ (the related systems bring their own)
    liks = {r.get("likelihood") for r in done}
    mixed = len(liks) > 1
    best = {lk: min(r["test_objective"] for r in done if r.get("likelihood") == lk) for lk in liks}
    units = next((r.get("units") for r in done if r.get("units")), "the likelihood's units")
    lik = next((r.get("likelihood") for r in done if r.get("likelihood")), None)
    what = (f"`--likelihood {lik}` summed over the example, plus KL; in {units}" if not mixed else
            "each row's likelihood (column `likelihood`; the units differ, so compare objectives only "
            "within one likelihood), plus the row's regulariser")
    lines = [f"# Models on {data} (seed {seed})", "",
             f"Final-epoch objective per example (reconstruction, the negative log-likelihood of {what}), "
             "as in the paper's Tables 1 and 9: train and test objective, and the test reconstruction and "
             "KL terms; lowest test objective in bold" + (" per likelihood" if mixed else "") + ". "
             "Trainable parameters of the generative model, total and prior, as in the paper's Table 4. "
             "FD-data: every run's headline, comparable across rows whatever their likelihood: the "
             "Fréchet distance of 1,000 samples to 1,000 test examples in the data's own space "
             "(pixels pooled to at most 1,024 values; lower is better; `evaluate`'s FD-LeNet is the "
             "better metric).",
             "", "| Model | train | test | recon | KL | FD-data | params total | params prior |"
             + (" likelihood |" if mixed else ""),
             "|---|---|---|---|---|---|---|---|" + ("---|" if mixed else "")]
    for r in rows:
        tail = f" {r.get('likelihood') or ''} |" if mixed else ""
        if r.get("test_objective") is None:
            if r["key"] == "expost" and r.get("params_total") is not None:
                lines.append(f"| {r['name']} | | | | | {_fmt(r.get('fd_data'))} | {r['params_total']} | 0 |"
                             + tail)
            elif r["key"] in DERIVED and r["status"].startswith("from"):
                lines.append(f"| {r['name']} ({r['status']}; no objective of its own) | | | | | | | |" + tail)
            else:
                lines.append(f"| {r['name']} | {r['status']} | | | | | | |" + tail)
            continue
        test = _fmt(r["test_objective"])
        if r["test_objective"] == best.get(r.get("likelihood")):
            test = f"**{test}**"
        lines.append(f"| {r['name']} | {_fmt(r['train_objective'])} | {test} | {_fmt(r['test_recon'])} | "
                     f"{_fmt(r['test_kl'])} | {_fmt(r.get('fd_data'))} | {r['params_total']} | {r['params_prior']} |" + tail)
    stage1 = next((r["stage1_params"] for r in rows if r.get("stage1_params")), None)
    lines += ["",
              "KL: the X-VAE mixture rows give their --kl objective (tight by default: Lemma 1 at the "
              "optimal per-row weights; paper: Eq. 18's categorical plus per-component Gaussian terms); "
              "VampPrior, MoG and GM-VAE (Gaussian part) report the Monte Carlo estimate "
              "log q(z|x) - log p(z), which can be negative. Prior parameters: VampPrior "
              "pseudo-inputs, the MoG mixture, the hierarchical conditional prior network, the GM-VAE "
              "per-cluster prior heads; X-VAE's fitted prior is a frozen buffer (0)."]
    if any(r["model"] == "twostage" for r in done):
        lines.append("Two-Stage VAE: stage 1's objective on x (Gaussian with the learned variance gamma: "
                     "a density, negative once gamma is small); its prior parameters are the stage-2 VAE.")
    if any(r["model"] == "avae" for r in done):
        lines.append("AVAE: squared error (or BCE) + beta * KL, the KL the minibatch estimate log q_KDE(z) - "
                     "log p(z) on the epoch's KDE centres (can be negative); no prior parameters.")
    if any(r["model"] == "uae" for r in done):
        lines.append("UAE family: paper 003's objective (the code form by default: squared error of the "
                     "mean decoded image averaged over pixels, plus the weighted regulariser and gradient "
                     "penalty), no KL column; samples come from the full-covariance mixture fitted ex post.")
    if stage1:
        lines.append(f"X-VAE also pretrains a stage-1 autoencoder ({stage1} parameters), shared by its "
                     "rows and not counted, as in the paper's Table 4; the ex-post reference is that "
                     "autoencoder alone.")
    ran = sorted({r["provenance"] for r in rows if r.get("provenance")})
    if ran:
        lines.append("How the runs ran: " + "; ".join(ran) + ".")
    if any(r.get("rec") is not None for r in rows):
        lines += ["", _table2(rows)]
    paper = _paper_table(rows, data)
    if paper:
        lines += ["", paper]
    return "\n".join(lines) + "\n"


def _paper_table(rows: List[Dict[str, Any]], data: str) -> Optional[str]:
    """Our numbers beside the paper's (its Tables 4, 8 and 9), on the datasets the paper reports."""
    from .paper_results import paper_row
    pairs = [(r, paper_row(data, r["key"])) for r in rows]
    pairs = [(r, p) for r, p in pairs if p is not None]
    if not pairs:
        return None
    mse = all(r.get("likelihood") == "mse" for r, _ in pairs if r.get("likelihood"))
    fd = next((r["fd_name"] for r, _ in pairs if r.get("fd_name")), None)
    fd_label = {"fd_lenet": "FD-LeNet", "fd_mlp": "FD-MLP"}.get(fd, "FD")
    fid = any(r.get("fid_samples") is not None for r, _ in pairs)
    lines = ["## Beside the paper", "",
             "| Model | test (ours) | test (paper) | KL (ours) | KL (paper) | Rec (ours) | Rec (paper) | "
             + ("FID (ours)" if fid else f"{fd_label} (ours)") + " | FID (paper) | params M (ours) | "
             "params M (paper) |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r, p in pairs:
        ours_fd = r.get("fid_samples") if fid else r.get("fd_samples")
        total = r.get("params_total")
        lines.append(f"| {r['name']} | {_fmt(r.get('test_objective'))} | {p['test']:g} | "
                     f"{_fmt(r.get('test_kl'))} | {p['kl']:g} | {_fmt(r.get('rec'))} | {p['rec']:g} | "
                     f"{_fmt(ours_fd)} | {p['fid']:g} | "
                     f"{'-' if total in (None, '') else f'{int(total) / 1e6:.2f}'} | {p['params_m']:g} |")
    lines += ["", "The paper's numbers are as printed in its Tables 8 (Rec, FID), 9 (objective, KL) and 4 "
              "(trainable parameters, millions; its routed rows share one count), at its budget (10 + 15 "
              "epochs, one seed). Its objective is squared error summed per image plus Eq. 18's KL"
              + (", as in these runs." if mse else
                 "; these runs used another likelihood, so the objective and KL columns are in other units "
                 "and compare only in their ordering (`--preset paper` for the paper's units).")
              + (" Its FID is Inception's (pool3, 2048-d); ours is "
                 + ("Inception FID too." if fid else f"offline {fd_label}, in another feature space, so "
                    "only the ordering of rows compares, not the values.")) +
              " Rec: squared error summed per test image in both."]
    return "\n".join(lines)


def _table2(rows: List[Dict[str, Any]]) -> str:
    """The paper's Table 2 (Rec, sample quality) with our offline metrics beside it."""
    ev = [r for r in rows if r.get("rec") is not None]
    fd = next((r["fd_name"] for r in ev if r.get("fd_name")), None)
    label = {"fd_lenet": "FD-LeNet", "fd_mlp": "FD-MLP", "fd_data": "FD-data"}.get(fd, "FD")
    cols = [("Rec↓", "rec", min), (f"{label} samples↓", "fd_samples", min),
            (f"{label} recon↓", "fd_recon", min), ("precision↑", "precision", max),
            ("recall↑", "recall", max)]
    if any(r.get("fd_interp") is not None for r in ev):
        cols.insert(3, (f"{label} interp↓", "fd_interp", min))
    if any(r.get("fid_samples") is not None for r in ev):
        cols += [("FID↓", "fid_samples", min), ("FID recon↓", "fid_recon", min), ("IS↑", "is_mean", max)]
    if any(r.get("hist_kl") is not None for r in ev):      # the 2-D sets (docs/toy2d.md)
        cols += [("hist KL↓", "hist_kl", min), ("JSD (S-IntroVAE)↓", "jsd_sintro", min), ("JSD↓", "jsd", min)]
    if any(r.get("modes_covered") is not None for r in ev):
        cols += [("modes covered↑", "modes_covered", max)]
    if any(r.get("in_modes") is not None for r in ev):
        cols += [("in modes↑", "in_modes", max)]
    nll = [r for r in ev if r.get("nll") is not None]
    if nll:
        cols += [("NLL↓ (nats)", "nll", min)]
    best = {}
    for _, k, pick in cols:
        vals = [r[k] for r in ev if r.get(k) is not None and math.isfinite(r[k])]
        best[k] = pick(vals) if vals else None
    head = "| Model | " + " | ".join(c for c, _, _ in cols)
    shares = any(r.get("mode_shares") for r in ev)
    lines = ["## Table 2: reconstruction and sample quality", "",
             head + (" | per-mode shares |" if shares else " |"),
             "|---|" + "---|" * (len(cols) + (1 if shares else 0))]
    for r in ev:
        cells = []
        for _, k, _ in cols:
            v = r.get(k)
            cell = _fmt(v)
            if k == "is_mean" and v is not None and r.get("is_std") is not None:
                cell = f"{v:.3f}±{r['is_std']:.3f}"
            if k == "nll" and v is not None:
                cell = f"{v:.2f}±{r['nll_se']:.2f}"
            cells.append(f"**{cell}**" if v is not None and v == best[k] else cell)
        if shares:
            cells.append("/".join(f"{v:.2f}" for v in r.get("mode_shares") or []))
        lines.append(f"| {r['name']} | " + " | ".join(cells) + " |")
    routing = next((r["eval_routing"] for r in ev if r.get("eval_routing")), None)
    n_fake = next((r["eval_n_fake"] for r in ev if r.get("eval_n_fake")), 2000)
    lines += ["", "Rec: squared error summed per test example (the paper's Rec, whatever the "
              f"likelihood). {label}: the Fréchet distance of {n_fake} samples (alpha 1) and of test "
              "reconstructions to real test data in the features of a classifier trained on the "
              "dataset's labels, offline (not Inception FID); precision / recall: k-NN manifolds (k = 3) "
              "in the same features; best per column in bold."
              + (" Interp (UAE family): the FD of decoded slerp midpoints of random real pairs." if any(
                  r.get("fd_interp") is not None for r in ev) else "")
              + (f" X-VAE mixture rows generate with {routing} routing (their --routing)." if routing
                 else "")
              + (" In modes: fraction of samples within 3 std of a cluster mode; per-mode shares: each "
                 "mode's share of the samples." if shares else "")
              + (f" NLL: importance-sampled -log p(x), k = {nll[0]['nll_k']}, mean ± standard error over "
                 "the test examples, in nats" + (", on the test set binarised once (fixed seed)"
                                                 if nll[0].get("nll_binarized") else "")
                 + "; empty where a model has no density (python -m xvae_fast.evaluate --nll says why)."
                 if nll else "")]
    return "\n".join(lines)


def _write_tables(rows: List[Dict[str, Any]], out: str, data: str, seed: int) -> None:
    def table(name: str):
        return atomic_open(os.path.join(out, name), "w", newline="")

    with table("comparison.md") as f:
        f.write(to_markdown(rows, data, seed))
    with table("comparison.csv") as f:
        w = csv.DictWriter(f, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else
                            ("/".join(f"{v:.4f}" for v in r[k]) if isinstance(r.get(k), list) else r[k]))
                        for k in CSV_COLUMNS})
    with table("comparison.json") as f:
        json.dump({"data": data, "seed": seed, "rows": rows}, f, indent=2, default=float)


def build_parser() -> argparse.ArgumentParser:
    p = CommandParser(prog="python -m xvae_fast.compare", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="digits", metavar="SPEC", help="dataset, as --dataset of "
                   "xvae_fast.train: digits (default), clusters, mnist:DIR, celeba:DIR, ...")
    p.add_argument("--seed", type=int, default=42, help="seed of every run (default 42, paper Table 5)")
    p.add_argument("--epochs", type=int, default=None, metavar="N", help="training epochs of every "
                   "model (the VAE stage; default per dataset, as xvae_fast.train)")
    p.add_argument("--epochs-ae", type=int, default=None, metavar="N", help="X-VAE stage-1 epochs "
                   "(default per dataset)")
    p.add_argument("--models", default="paper", metavar="LIST", help="comma-separated rows or groups: "
                   f"{', '.join(KEYS)}; groups paper (the paper's tables: the baselines, every X-VAE "
                   "configuration and the ex-post reference; default), related (the Two-Stage VAE and "
                   "the UAE family, docs/models.md), all")
    p.add_argument("--out", default=None, metavar="DIR", help="folder for the runs and the tables "
                   "(default runs/compare-<data>-seed<seed>)")
    p.add_argument("--quick", action="store_true", help="a tiny budget (240 examples, 1 epoch per "
                   "stage, no figures): a smoke test of the whole comparison")
    p.add_argument("--overwrite", action="store_true", help="retrain every run, even finished ones")
    p.add_argument("--quiet", action="store_true", help="less logging")
    g = p.add_argument_group("evaluation (Table 2)")
    g.add_argument("--evaluate", action="store_true", help="also evaluate every row (python -m "
                   "xvae_fast.evaluate's metrics) and add the paper's Table 2")
    g.add_argument("--inception-weights", metavar="PATH", default=None, help="with --evaluate: "
                   "pytorch-fid's Inception weights, for FID and IS (images only)")
    g.add_argument("--n-fake", type=int, default=2000, metavar="N", help="samples per row (default 2000)")
    g.add_argument("--n-real", type=int, default=1000, metavar="N", help="real test examples (default "
                   "1000; all when fewer)")
    g.add_argument("--classifier-steps", type=int, default=None, metavar="N", help="training steps of "
                   "the offline feature classifier (default: its recipe)")
    g.add_argument("--eval-device", default="auto", metavar="DEV", help="device of the evaluation")
    g.add_argument("--nll", action="store_true", help="with --evaluate: an NLL column (evaluate --nll: "
                   "importance-sampled -log p(x) of every row with a density; the others stay empty)")
    g.add_argument("--nll-k", type=int, default=None, metavar="K", help="importance samples per "
                   "example (default: evaluate's)")
    g.add_argument("--nll-n", type=int, default=None, metavar="N", help="test examples of the NLL "
                   "(default: evaluate's)")
    g.add_argument("--nll-binarize", action="store_true", help="the papers' protocol: the test "
                   "images binarised once with a fixed seed")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args, extra = build_parser().parse_known_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    settings = None
    nll_flags = args.nll or args.nll_k is not None or args.nll_n is not None or args.nll_binarize
    if args.evaluate:
        settings = EvalSettings(args.inception_weights, args.n_real, args.n_fake, args.classifier_steps,
                                args.eval_device)
    elif args.inception_weights or nll_flags:
        print(f"error: {'--inception-weights' if args.inception_weights else '--nll'} is for --evaluate",
              file=sys.stderr)
        return 2
    if nll_flags and not args.nll:
        print("error: --nll-k, --nll-n and --nll-binarize set the NLL column: add --nll", file=sys.stderr)
        return 2
    if args.nll:
        from .evaluation.nll import NLLOptions
        nll = NLLOptions(binarize=args.nll_binarize)
        nll = dataclasses.replace(nll, **{k: v for k, v in (("k", args.nll_k), ("n", args.nll_n))
                                          if v is not None})
        try:
            settings.nll = nll.validate()
        except XVAEError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    try:
        rows = run_comparison(args.data, args.seed, args.out, models, args.epochs, args.epochs_ae,
                              args.quick, extra, args.overwrite, verbose=not args.quiet,
                              evaluate=settings)
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
