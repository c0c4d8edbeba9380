"""Writing an evaluation: eval.json (every number with its protocol), eval.md (a Markdown table row
in the form of the paper's Table 2, the alpha sweep, the protocol), the sweep plot and the sample
grids per alpha."""
from __future__ import annotations

import json
import math
import os
from typing import Any, Dict, List, Optional

from ..atomic_file import write_json

LABELS = {"fd_lenet": "FD-LeNet", "fd_mlp": "FD-MLP", "fd_data": "FD-data", "fid": "FID"}


def model_name(report: Dict[str, Any]) -> str:
    model, plan = report.get("model"), report.get("plan")
    if report.get("evaluated", "vae") != "vae":      # a reference sampler names itself
        return str(report.get("reference") or f"{model} reference ({plan})")
    return str(model) if not plan or plan in (model, "standard") else f"{model} ({plan})"


def _num(v: Optional[float], digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return f"{v:.{digits}g}" if abs(v) < 1e4 else f"{v:.1f}"


def _pm(d: Optional[Dict[str, float]]) -> str:
    return "–" if not d else f"{d['mean']:.3f}±{d['std']:.3f}"


def table_header(report: Dict[str, Any]) -> List[str]:
    return [c for c, _ in _columns(report)]


def _columns(report: Dict[str, Any]):
    m = report["metrics"]
    cols = [("run", lambda: os.path.basename(report["run"].rstrip(os.sep))),
            ("model", lambda: model_name(report)),
            ("dataset", lambda: report["dataset"])]
    if "rec" in m:
        cols.append(("Rec↓", lambda: _num(m["rec"]["value"])))
    if "nll" in m:
        cols.append((f"NLL (k={m['nll']['k']})↓", lambda: f"{m['nll']['mean']:.2f}±{m['nll']['stderr']:.2f}"))
    for key, label in LABELS.items():
        if key in m:
            cols.append((f"{label} samples↓", lambda k=key: _num(m[k]["samples"]["value"])))
            cols.append((f"{label} recon↓", lambda k=key: _num(m[k]["recon"]["value"])))
    for key in ("pr_lenet", "pr_mlp", "pr_data", "pr_inception"):
        if key in m:
            net = key[3:]
            cols.append((f"precision ({net})↑", lambda k=key: f"{m[k]['precision']:.3f}"))
            cols.append((f"recall ({net})↑", lambda k=key: f"{m[k]['recall']:.3f}"))
    if "is" in m:
        cols.append(("IS↑", lambda: _pm(m["is"])))
    if "modes" in m:
        cols.append(("in modes↑", lambda: f"{m['modes']['within_3std']:.3f}"))
        cols.append(("per-mode shares", lambda: "/".join(f"{v:.2f}" for v in m["modes"]["shares"])))
    if "toy2d" in m:   # the 2-D benchmark (evaluation/histogram.py)
        cols += [("hist KL↓", lambda: _num(m["toy2d"]["hist_kl"])),
                 ("JSD (S-IntroVAE)↓", lambda: _num(m["toy2d"]["jsd_sintro"])),
                 ("JSD↓", lambda: _num(m["toy2d"]["jsd"]))]
        if "modes_covered" in m["toy2d"]:
            cols.append(("modes covered↑", lambda: f"{m['toy2d']['modes_covered']}/{m['toy2d']['n_modes']}"))
    return cols


def markdown_row(report: Dict[str, Any], *more: Dict[str, Any]) -> str:
    """The header, separator and row of this run's table, and a row per report in `more` with the
    same metrics (e.g. the run's ex-post reference); paste rows of several runs together."""
    cols = _columns(report)
    head = "| " + " | ".join(c for c, _ in cols) + " |"
    sep = "|" + "|".join("---" for _ in cols) + "|"
    rows = ["| " + " | ".join(f() for _, f in cols) + " |"]
    for other in more:   # under this report's columns; a metric the other lacks (e.g. the NLL of a
        theirs = dict(_columns(other))   # reference sampler) shows as –
        rows.append("| " + " | ".join(theirs[c]() if c in theirs else "–" for c, _ in cols) + " |")
    return "\n".join([head, sep] + rows)


def provenance_line(p: Optional[Dict[str, Any]]) -> Optional[str]:
    """One line for reports: how a run was trained (summary.json's `provenance`, training/provenance.py)."""
    if not p:
        return None
    where = p.get("device_name") or p.get("device")
    ranks = f"{p['world_size']} ranks ({p.get('backend')})" if p.get("world_size", 1) > 1 else "1 process"
    rev = p.get("source_revision")
    return (f"{ranks} on {where}, {p.get('threads')} threads, {p.get('precision')}; torch {p.get('torch')}, "
            f"xvae_fast {p.get('xvae_fast')}" + (f" ({rev[:12]}{'+dirty' if rev.endswith('+dirty') else ''})"
                                                if rev else ""))


def markdown(report: Dict[str, Any]) -> str:
    p = report["protocol"]
    lines = [f"# Evaluation of `{report['run']}`", "",
             f"{model_name(report)} on {report['dataset']}; samples at alpha "
             f"{report['sample_alpha']:g}" + (f", {p['routing']} routing" if report.get("routing_applies")
                                               else "") + f"; device {report['device']}.", "",
             markdown_row(report), ""]
    trained = provenance_line(report.get("training_provenance"))
    if trained:
        lines += [f"Trained with: {trained}.", ""]
    m = report["metrics"]
    lines.append("Metrics:")
    if "rec" in m:
        lines.append(f"- Rec: {m['rec']['description']} ({m['rec']['n']} test examples).")
    if "nll" in m:
        e = m["nll"]
        lines.append(f"- NLL: {e['description']} ({e['n']} test examples, {e['likelihood']} likelihood; "
                     f"binarisation: {e['binarization']['method']}; prior {e['prior']}, proposal "
                     f"{e['proposal']}; mean effective sample size {e['ess_mean']:.1f} of {e['k']}).")
    for key, label in LABELS.items():
        if key in m:
            lines.append(f"- {label}: {m[key]['description']}.")
    if "toy2d" in m:
        t = m["toy2d"]
        lines.append(f"- hist KL / JSD: {t['description']} ({t['n_fake']} samples, {t['n_real']} real "
                     f"points, window [-{2 * t['range']:g}, {2 * t['range']:g}]^2; "
                     f"{t['fake_in_window']:.3f} of the samples inside it).")
    for name, net in report.get("feature_nets", {}).items():
        if name in ("lenet", "mlp"):
            lines.append(f"- Feature classifier ({name}): test accuracy {net['test_accuracy']:.4f}, "
                         f"{net['feature_dims']}-d features, trained {net['steps']} steps on "
                         f"{net['n_train']} labelled training examples; cached at `{net.get('cache_file')}`.")
        elif name == "inception":
            lines.append(f"- Inception weights: `{net['weights']}`.")
    sw = report.get("sweep")
    if sw:
        lines += ["", "## Alpha sweep", ""]
        vals = sw["values"]
        cols = []
        for k, v in vals.items():
            if k.startswith("pr_"):
                cols.append((f"precision ({k[3:]})↑", lambda i, v=v: f"{v['precision'][i]:.3f}"))
                cols.append((f"recall ({k[3:]})↑", lambda i, v=v: f"{v['recall'][i]:.3f}"))
            elif k == "is":
                cols.append(("IS↑", lambda i, v=v: f"{v['mean'][i]:.3f}±{v['std'][i]:.3f}"))
            else:
                cols.append((LABELS.get(k, k) + "↓", lambda i, v=v: _num(v[i])))
        lines.append("| alpha | " + " | ".join(c for c, _ in cols) + " |")
        lines.append("|---|" + "|".join("---" for _ in cols) + "|")
        for i, a in enumerate(sw["alphas"]):
            lines.append(f"| {a:g} | " + " | ".join(f(i) for _, f in cols) + " |")
        files = report.get("files", {})
        if "sweep_plot" in files:
            lines += ["", f"![alpha sweep]({files['sweep_plot']})"]
        if "alpha_grid" in files:
            lines += ["", f"![samples per alpha]({files['alpha_grid']})"]
    lines += ["", "## Protocol", ""]
    lines.append("| option | value |")
    lines.append("|---|---|")
    for k, v in p.items():
        lines.append(f"| {k} | {v} |")
    if report.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {n}" for n in report["notes"]]
    lines += ["", f"Evaluated in {report['seconds']['total']:.1f} s with xvae_fast "
                  f"{report['xvae_fast_version']} on {report['created']}.", ""]
    return "\n".join(lines)


def write_figures(report: Dict[str, Any], grids, out: str, kind: str, reference=None) -> Dict[str, str]:
    """The sweep plot and the sample grids per alpha; returns {name: file name in out}."""
    from ..plots import plot_alpha_sweep, save_image_grid, save_image_rows, save_scatter
    files: Dict[str, str] = {}
    sw = report.get("sweep")
    if sw and sw["values"]:
        dist = {LABELS.get(k, k): v for k, v in sw["values"].items() if k in LABELS}
        rates = {}
        for k, v in sw["values"].items():
            if k.startswith("pr_"):
                rates[f"precision ({k[3:]})"] = v["precision"]
                rates[f"recall ({k[3:]})"] = v["recall"]
        if dist:
            name = "eval_alpha_sweep.png"
            plot_alpha_sweep(sw["alphas"], dist, os.path.join(out, name),
                             title=f"{model_name(report)} on {report['dataset']}: "
                                   "diversity-fidelity sweep",
                             rates=rates or None, mark=report["sample_alpha"])
            files["sweep_plot"] = name
    alphas = sorted(grids)            # the sweep's alphas and the headline alpha
    if kind == "image":
        for a in alphas:
            name = f"eval_samples_alpha_{a:g}.png"
            save_image_grid(grids[a], os.path.join(out, name), nrow=8,
                            title=f"samples, alpha={a:g}")
            files[f"samples_alpha_{a:g}"] = name
        if len(alphas) > 1:
            name = "eval_alpha_grid.png"
            save_image_rows([grids[a][:16] for a in alphas], [f"alpha={a:g}" for a in alphas],
                            os.path.join(out, name), "samples per alpha (same noise)")
            files["alpha_grid"] = name
    else:
        name = "eval_alpha_grid.png"
        save_scatter([grids[a].numpy() for a in alphas], [f"alpha={a:g}" for a in alphas],
                     os.path.join(out, name), "samples per alpha over the real data (grey; model "
                     "space, same noise)", panels=True,
                     reference=None if reference is None else reference.numpy())
        files["alpha_grid"] = name
    return files


def write_report(report: Dict[str, Any], out: Optional[str] = None, figures: bool = True,
                 json_name: str = "eval.json", md_name: str = "eval.md") -> Dict[str, str]:
    """Write eval.json, eval.md and (with figures) the plot and grids into `out` (default: the
    report's output folder); returns the paths written."""
    out = out or report["out"]
    os.makedirs(out, exist_ok=True)
    grids = report.pop("_grids", None)
    reference = report.pop("_reference", None)
    files = dict(report.get("files") or {})
    if figures and grids is not None:
        files.update(write_figures(report, grids, out, report["data_kind"], reference))
    files["json"], files["markdown"] = json_name, md_name
    report["files"] = files
    write_json(report, os.path.join(out, json_name))
    with open(os.path.join(out, md_name), "w", encoding="utf-8") as f:
        f.write(markdown(report))
    return {k: os.path.join(out, v) for k, v in files.items()}


def load_report(path: str) -> Dict[str, Any]:
    with open(path, encoding="utf-8") as f:
        return json.load(f)
