"""What the bulk commands (`compare --evaluate`, the experiment sweeps) take from an evaluation: the
headline numbers of a report, and a cache of reports next to each run so a rerun does not
re-evaluate a run whose checkpoint has not changed."""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Dict

from ..atomic_file import write_json
from ..checkpoint_file import CHECKPOINT
from .runner import EvalOptions, evaluate_run


def headline_metrics(report: Dict[str, Any]) -> Dict[str, Any]:
    """Rec, the offline (and Inception) Fréchet distances of samples and reconstructions, precision /
    recall, the Inception Score, the NLL (with --nll), for the clusters the in-mode fraction and per-mode shares, and for
    the 2-D benchmark the histogram KL, both JSDs and (8gaussians) the mode coverage."""
    m = report["metrics"]
    out: Dict[str, Any] = {}
    if "rec" in m:
        out["rec"] = m["rec"]["value"]
    for fd in ("fd_lenet", "fd_mlp", "fd_data"):
        if fd in m:
            out.update(fd_name=fd, fd_samples=m[fd]["samples"]["value"], fd_recon=m[fd]["recon"]["value"])
            if "interp" in m[fd]:
                out["fd_interp"] = m[fd]["interp"]["value"]
    for pr in ("pr_lenet", "pr_mlp", "pr_data"):
        if pr in m:
            out.update(precision=m[pr]["precision"], recall=m[pr]["recall"])
    if "fid" in m:
        out.update(fid_samples=m["fid"]["samples"]["value"], fid_recon=m["fid"]["recon"]["value"])
    if "is" in m:
        out.update(is_mean=m["is"]["mean"], is_std=m["is"]["std"])
    if "modes" in m:
        out.update(in_modes=m["modes"]["within_3std"], mode_shares=m["modes"]["shares"],
                   min_mode_share=min(m["modes"]["shares"]))
    if "nll" in m:     # evaluate --nll: the importance-sampled NLL, comparable across models
        out.update(nll=m["nll"]["mean"], nll_se=m["nll"]["stderr"], nll_k=m["nll"]["k"],
                   nll_binarized=m["nll"]["binarization"]["binarized"])
    if "toy2d" in m:   # the 2-D benchmark (paper 001's Table 1), and the 8gaussians mode coverage
        t = m["toy2d"]
        out.update({k: t[k] for k in ("hist_kl", "jsd_sintro", "jsd", "in_modes", "mode_shares",
                                      "min_mode_share", "modes_covered") if k in t})
    return out


def evaluate_cached(run_dir: str, opts: EvalOptions, name: str) -> Dict[str, Any]:
    """evaluate_run(run_dir, opts) (figures off), reusing run_dir/<name>.json when it was written
    after the run's checkpoint with the same model, protocol and feature-network options."""
    key = {"model": opts.model, "protocol": opts.protocol.to_dict(), "metrics": opts.metrics,
           "inception": opts.inception_weights, "classifier_steps": opts.classifier_steps}
    if opts.nll is not None:    # (absent otherwise, so reports cached before --nll stay valid)
        key["nll"] = dataclasses.asdict(opts.nll)
    path = os.path.join(run_dir, f"{name}.json")
    if os.path.isfile(path) and os.path.getmtime(path) >= os.path.getmtime(
            os.path.join(run_dir, CHECKPOINT)):
        with open(path, encoding="utf-8") as f:
            cached = json.load(f)
        if cached.get("key") == key:
            return cached["report"]
    report = evaluate_run(run_dir, opts)
    report.pop("_grids", None)
    report.pop("_reference", None)
    write_json({"key": key, "report": report}, path)
    return report
