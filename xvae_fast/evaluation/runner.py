"""Evaluate a trained run: reconstruction error, Fréchet distances of samples and reconstructions
(offline classifier features and/or Inception), precision / recall, the Inception Score, and the
alpha sweep. `evaluate_run(run, EvalOptions(...))` returns the report that `xvae_fast.evaluate`
writes as eval.json / eval.md (see docs/evaluation.md). It checks the options, loads the run, chooses
the metric units that apply (units.py) and runs them around one stream of samples per alpha."""
from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..errors import ConfigError, DataError
from ..outpaths import check_out_dir
from ..run_loading import load_reference, load_run, read_summary
from . import units
from .frechet import gaussian_stats, load_stats, save_stats
from .protocol import Protocol
from .sampling import generate_chunks
from .units import SAMPLE_SEED_OFFSET

DEFAULT_SWEEP = (0.5, 0.75, 1.0, 1.25, 1.5)
METRICS = ("rec", "fd", "pr", "fid", "is")
DEFAULT_METRICS = ("rec", "fd", "pr")
ALIASES = {"all": METRICS, "default": DEFAULT_METRICS, "offline": DEFAULT_METRICS,
           "inception": ("fid", "is")}
N_SCATTER = 600     # points per alpha in the scatter plots of vector data
EVAL_CHUNK = 2048   # generated samples held at a time (their features are kept, not the samples)


def parse_metrics(text) -> Tuple[str, ...]:
    """'rec,fd,pr,fid,is' (or aliases all, default, offline, inception) -> the metric names, in the
    canonical order."""
    items = text.split(",") if isinstance(text, str) else list(text)
    chosen = set()
    for raw in items:
        name = str(raw).strip().lower()
        if not name:
            continue
        if name in ALIASES:
            chosen.update(ALIASES[name])
        elif name in METRICS:
            chosen.add(name)
        else:
            raise ConfigError(f"--metrics: unknown metric {raw!r}; choose from {', '.join(METRICS)} or "
                              f"{', '.join(ALIASES)}")
    if not chosen:
        raise ConfigError(f"--metrics is empty; choose from {', '.join(METRICS)}")
    return tuple(m for m in METRICS if m in chosen)


def parse_alphas(text) -> List[float]:
    """'0.5,0.75,1' -> [0.5, 0.75, 1.0]; 'none' -> [] (no sweep). Each must be positive and finite."""
    if isinstance(text, str):
        if text.strip().lower() in ("none", "off", ""):
            return []
        parts = [p.strip() for p in text.split(",") if p.strip()]
        try:
            values = [float(p) for p in parts]
        except ValueError:
            raise ConfigError(f"--alpha must be comma-separated positive numbers such as "
                              f"0.5,0.75,1,1.25,1.5 (or none), got {text!r}") from None
    else:
        values = [float(v) for v in text]
    for v in values:
        if not (math.isfinite(v) and v > 0):
            raise ConfigError(f"--alpha values must be positive and finite, got {v!r}")
    return sorted(set(values))


@dataclasses.dataclass
class EvalOptions:
    metrics: Optional[Sequence[str]] = None      # None: rec, fd, pr (+ fid, is with inception_weights)
    alphas: Optional[Sequence[float]] = None     # the sweep; None: DEFAULT_SWEEP; []: no sweep
    sample_alpha: Optional[float] = None         # the headline alpha; None: the run's --alpha
    protocol: Protocol = dataclasses.field(default_factory=Protocol)
    inception_weights: Optional[str] = None
    download: bool = True
    fid_stats_in: Optional[str] = None
    fid_stats_out: Optional[str] = None
    cache_dir: Optional[str] = None              # feature-classifier cache
    classifier_steps: Optional[int] = None       # override the classifier recipe's step count
    device: str = "auto"
    threads: Optional[int] = None                # None: the run's --threads (1 for bundled data)
    out: Optional[str] = None                    # where figures / PNGs go (default: the run folder)
    grid_size: int = 64                          # samples per alpha in the sample grids
    figures: bool = True
    progress: bool = True
    log: Optional[Callable[[str], None]] = None
    model: str = "vae"                           # vae: the trained model; else a reference sampler's name
    nll: Optional[Any] = None                    # nll.NLLOptions: the importance-sampled NLL (--nll)


@contextlib.contextmanager
def _threads(n: Optional[int]):
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _log_fn(opts: EvalOptions):
    if opts.log is not None:
        return opts.log
    return lambda msg: None


def _resolve_metrics(opts: EvalOptions) -> Tuple[Tuple[str, ...], bool]:
    if opts.metrics is None:
        m = DEFAULT_METRICS + (("fid", "is") if opts.inception_weights else ())
        return parse_metrics(m), False
    return parse_metrics(opts.metrics), True


def evaluate_run(run: str, opts: Optional[EvalOptions] = None) -> Dict[str, Any]:
    """Evaluate the run folder `run`; returns the report (see write_report). Figures (the sweep
    plot, sample grids) go to opts.out (default: the run folder) when opts.figures."""
    opts = opts or EvalOptions()
    t0 = time.time()
    proto, metrics, explicit, sweep = _checked_options(run, opts)
    out = opts.out or (run if os.path.isdir(run) else os.path.dirname(os.path.abspath(run)))
    check_out_dir(out, "--out")   # before any work; the folder is created when the report is written
    cfg, ev, threads = _prepare(run, opts, proto, metrics, sweep)
    inception_net = _load_inception(ev)     # first, so missing weights fail before any work
    with _threads(threads):
        _load_data(ev, cfg)
        _measure(ev, "data")
        _draw_real(ev)
        ev.as_seen = _seen_by_the_nets(ev, os.path.join(out, "eval_png"))
        _add_spaces(ev, inception_net, explicit)
        _measure(ev, "test")
        _see_real(ev)
        _measure(ev, "real")
        chosen = [u for u in units.UNITS if u.applies(ev)]
        grids = _sample_alphas(ev, chosen)
        for unit in chosen:
            unit.finish(ev)
    return _report(run, out, cfg, ev, threads, sweep, grids, t0)


def _checked_options(run: str, opts: EvalOptions):
    """(the validated protocol, the metric names, whether they were asked for, the sweep's alphas);
    a ConfigError for a bad option, before anything is loaded."""
    proto = opts.protocol.validate()
    metrics, explicit = _resolve_metrics(opts)
    sweep = parse_alphas(DEFAULT_SWEEP if opts.alphas is None else opts.alphas)
    if opts.sample_alpha is not None and not (isinstance(opts.sample_alpha, (int, float)) and
                                              math.isfinite(opts.sample_alpha) and opts.sample_alpha > 0):
        raise ConfigError(f"--sample-alpha must be a positive finite number, got {opts.sample_alpha!r}")
    if isinstance(opts.grid_size, bool) or not isinstance(opts.grid_size, int) or opts.grid_size < 1:
        raise ConfigError(f"--grid-size must be a positive integer, got {opts.grid_size!r}")
    if opts.classifier_steps is not None and (isinstance(opts.classifier_steps, bool) or not isinstance(
            opts.classifier_steps, int) or opts.classifier_steps < 1):
        raise ConfigError(f"--classifier-steps must be a positive integer, got {opts.classifier_steps!r}")
    if not isinstance(run, str) or not os.path.exists(run):
        raise ConfigError(f"--run {run!r} does not exist; pass a run folder written by "
                          "`python -m xvae_fast.train`")
    if (opts.fid_stats_in or opts.fid_stats_out) and "fid" not in metrics:
        raise ConfigError("--fid-stats-in / --fid-stats-out are statistics of Inception features; they "
                          "need the FID (--metrics fid or --metrics inception)")
    if opts.fid_stats_out and opts.fid_stats_in:
        raise ConfigError("--fid-stats-out and --fid-stats-in exclude each other (the statistics read "
                          "in would just be written back)")
    if opts.fid_stats_out and not str(opts.fid_stats_out).endswith(".npz"):
        raise ConfigError(f"--fid-stats-out must end in .npz, got {opts.fid_stats_out!r}")
    if not isinstance(opts.model, str) or not opts.model:
        raise ConfigError(f"the evaluated model must be vae (the trained model) or the name of one of the "
                          f"run's reference samplers, got {opts.model!r}")
    if opts.nll is not None:
        opts.nll.validate()
        if opts.model != "vae":
            raise ConfigError(f"--nll evaluates the trained model, not the {opts.model!r} reference sampler")
    return proto, metrics, explicit, sweep


def _load_model(run: str, opts: EvalOptions):
    """(config, DataInfo, the evaluated model): the trained model, or the reference sampler opts.model."""
    if opts.model == "vae":
        cfg, info, model, _ = load_run(run, opts.device)
    else:
        cfg, info, model, _ = load_reference(run, opts.model, opts.device)
    return cfg, info, model


def _prepare(run: str, opts: EvalOptions, proto: Protocol, metrics, sweep):
    """Load the evaluated model and check the options against it and its data: (config, the
    Evaluation, the CPU threads)."""
    cfg, info, model = _load_model(run, opts)
    dev = next(model.parameters()).device
    if opts.nll is not None:           # before any work: a model without a density is refused here
        from .nll import check_nll_supported
        check_nll_supported(model)
    if proto.routing is None:   # the run's own routing (per-row for models without a routed prior)
        proto = dataclasses.replace(proto, routing=model.default_routing)
    threads = opts.threads if opts.threads is not None else getattr(cfg, "threads", None)
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ConfigError(f"--threads must be a positive integer, got {threads!r}")
    headline = float(opts.sample_alpha if opts.sample_alpha is not None else getattr(cfg, "alpha", 1.0))
    if info.kind != "image" and proto.png:
        raise ConfigError(f"--png-protocol applies to images; dataset {info.name!r} holds vectors")
    if info.kind != "image" and ("fid" in metrics or "is" in metrics):
        raise ConfigError(f"the Inception metrics (fid, is) need images; dataset {info.name!r} holds "
                          f"{info.shape[0]}-d vectors; use the offline Fréchet distance (--metrics "
                          "rec,fd,pr)")
    if "is" in metrics and proto.n_fake < proto.is_splits:
        raise ConfigError(f"the Inception Score over --is-splits {proto.is_splits} needs --n-fake >= "
                          f"{proto.is_splits}, got {proto.n_fake}")
    ev = units.Evaluation(model=model, info=info, proto=proto, opts=opts, metrics=metrics,
                          headline=headline, alphas=sorted(set(sweep) | {headline}), device=dev,
                          log=_log_fn(opts))
    untrained = _untrained_stages(read_summary(run), opts)
    if untrained:
        ev.notes.append(f"this run is untrained ({', '.join(untrained)}: 0 epochs): these are the "
                        "metrics of a model at its initialisation")
    return cfg, ev, threads


def _load_inception(ev: units.Evaluation):
    """(network, weights source) of the FID Inception network when fid or is is asked for, else None."""
    if "fid" not in ev.metrics and "is" not in ev.metrics:
        return None
    from .inception import load_inception
    t = time.time()
    net = load_inception(ev.opts.inception_weights, ev.opts.download, ev.device, ev.proto.inception_size)
    ev.timings["load_inception"] = time.time() - t
    return net


def _load_data(ev: units.Evaluation, cfg) -> None:
    from ..data import load_dataset
    t = time.time()
    ev.bundle = load_dataset(cfg)
    ev.timings["load_data"] = time.time() - t


def _measure(ev: units.Evaluation, when: str) -> None:
    for unit in units.UNITS:
        if unit.when == when and unit.applies(ev):
            unit.measure(ev)


def _draw_real(ev: units.Evaluation) -> None:
    """The seeded subset of --n-real real examples (Evaluation.x_real)."""
    proto, metrics = ev.proto, ev.metrics
    split = ev.bundle.test if proto.real_split == "test" else ev.bundle.train
    n_avail = len(split)
    m = min(proto.n_real, n_avail)
    if m <= proto.pr_k and "pr" in metrics:
        raise ConfigError(f"precision / recall with --pr-k {proto.pr_k} need more than {proto.pr_k} "
                          f"real examples; the {proto.real_split} split has {n_avail}")
    if m < 2:
        raise DataError(f"the {proto.real_split} split has {n_avail} example(s); the Fréchet "
                        "distance needs at least 2")
    if m < proto.n_real:
        ev.notes.append(f"the {proto.real_split} split has {n_avail} examples, fewer than --n-real "
                        f"{proto.n_real}; all {n_avail} are used")
    if "pr" in metrics and max(m, proto.n_fake) > units.PR_MAX_ROWS:
        # exact k-NN manifolds cost O(N^2) time: a seeded subset keeps them to minutes
        ev.notes.append(f"precision / recall use a seeded random subset of {units.PR_MAX_ROWS} vectors "
                        f"of each set larger than that (--n-fake {proto.n_fake}, {m} real): the time of "
                        "their exact k-NN manifolds grows as N^2; the pr entries give n_real_used and "
                        "n_fake_used")
        ev.log(ev.notes[-1])
    idx = np.sort(np.random.default_rng(proto.seed).permutation(n_avail)[:m])
    ev.x_real = split.get_batch(torch.as_tensor(idx)).float()


def _seen_by_the_nets(ev: units.Evaluation, png_dir: str):
    """(x, name[, start]) -> model-space examples as the feature networks see them: images clamped to
    [0, 1], and with --png-protocol written as 8-bit PNG files under png_dir/name and read back."""
    image, png = ev.info.kind == "image", ev.proto.png

    def as_seen(x: torch.Tensor, name: str, start: int = 0) -> torch.Tensor:
        x = x.clamp(0.0, 1.0) if image else x
        if png:
            from .images import png_roundtrip
            x = png_roundtrip(x, os.path.join(png_dir, name), start)
        return x
    return as_seen


def _add_spaces(ev: units.Evaluation, inception_net, explicit: bool) -> None:
    """The feature spaces (Evaluation.spaces): the offline classifier's (fd, pr) and Inception's (fid,
    is). Without labels the offline metrics are dropped, or refused when asked for by name."""
    opts, proto, info = ev.opts, ev.proto, ev.info
    if "fd" in ev.metrics or "pr" in ev.metrics:
        t = time.time()
        space = _offline_space(ev.bundle, info, opts, ev.log)
        ev.timings["feature_classifier"] = time.time() - t
        if space is None:
            msg = (f"dataset {info.name!r} has no labels, so the offline feature classifier (and "
                   "with it the offline Fréchet distance and precision / recall) is not available; "
                   "use the Inception metrics (--metrics rec,fid,is; see docs/evaluation.md)")
            if explicit:
                raise ConfigError(msg)
            ev.notes.append(msg)
            ev.metrics = tuple(mm for mm in ev.metrics if mm not in ("fd", "pr"))
        else:
            ev.spaces.append(space)
            ev.log(f"offline features: {space.label} ({space.info.get('note', '')})".rstrip(" ()"))
    if inception_net is not None:
        from .inception import inception_outputs
        net, source = inception_net
        inc_info = {"network": "pytorch-fid FID Inception-v3 (pt_inception-2015-12-05)",
                    "weights": source, "feature_dims": proto.fid_dims,
                    "features": ("pool3, 2048-d" if proto.fid_dims == 2048 else
                                 f"{proto.fid_dims}-d block output, average-pooled (pytorch-fid --dims)"),
                    "resize_to": proto.inception_size,
                    "grayscale": "replicated to RGB", "input_range": "[0, 1] -> [-1, 1]",
                    "is_logits": "1008 classes, fc without bias (as the original Inception Score)"}

        def inc_fn(x, need_logits, _net=net):
            return inception_outputs(_net, x, proto.batch_size, ev.device, progress=opts.progress,
                                     dims=proto.fid_dims, logits=need_logits)
        ev.spaces.append(units.Space("inception", "fid", "FID", "Fréchet Inception Distance: pytorch-fid's "
                                     f"Inception-v3, {inc_info['features']}", inc_fn, inc_info))
        if proto.inception_size != 299:
            ev.notes.append(f"Inception inputs resized to {proto.inception_size}, not 299: a quick "
                            "check, not the FID protocol")
        if proto.fid_dims != 2048:
            ev.notes.append(f"FID in {proto.fid_dims}-d Inception features, not the 2048-d pool3 "
                            "features of the protocol: not comparable with published FIDs")


def _see_real(ev: units.Evaluation) -> None:
    """The real examples as the nets see them, and their features, Gaussian statistics (read from
    --fid-stats-in for Inception) and Inception logits; --fid-stats-out saves the statistics."""
    opts, metrics = ev.opts, ev.metrics
    ev.real_seen = ev.as_seen(ev.x_real, "real")
    for sp in ev.spaces:
        t = time.time()
        if sp.key == "inception" and opts.fid_stats_in:
            ev.real_stats[sp.key] = load_stats(opts.fid_stats_in, dims=ev.proto.fid_dims)
            ev.real_feats[sp.key] = None
            sp.info["real_stats"] = os.path.abspath(opts.fid_stats_in)
            if "pr" in metrics:
                ev.notes.append("precision / recall in Inception features need the real features, "
                                "not only their statistics: skipped with --fid-stats-in")
            if "is" not in metrics:
                continue
        f, lg = sp.fn(ev.real_seen, sp.key == "inception" and "is" in metrics)
        if sp.key == "inception":
            ev.real_logits = lg
        if sp.key not in ev.real_stats:
            ev.real_feats[sp.key] = f
            ev.real_stats[sp.key] = gaussian_stats(f)
        ev.timings[f"real_features_{sp.key}"] = time.time() - t
    if opts.fid_stats_out:
        save_stats(opts.fid_stats_out, *ev.real_stats["inception"])
        ev.log(f"wrote the real-image Inception statistics to {opts.fid_stats_out}")


def _sample_alphas(ev: units.Evaluation, chosen) -> Dict[float, torch.Tensor]:
    """The alpha stream: --n-fake samples per alpha from one seeded generator, their features in every
    space handed to each unit's per_alpha (Evaluation.per_alpha); returns the sample grids per alpha."""
    proto, info = ev.proto, ev.info
    ev.per_alpha = {a: {} for a in ev.alphas}
    grids: Dict[float, torch.Tensor] = {}
    t = time.time()
    n_grid = ev.opts.grid_size if info.kind == "image" else max(ev.opts.grid_size, N_SCATTER)
    keep_headline = any(u.keeps_samples for u in chosen)
    for a in ev.alphas:
        # Streamed in chunks: only the features (and the Inception logits) of all n_fake samples
        # are kept, never the samples themselves, so memory does not grow with the image size.
        feats: Dict[str, List[np.ndarray]] = {sp.key: [] for sp in ev.spaces}
        logits: Dict[str, List[np.ndarray]] = {sp.key: [] for sp in ev.spaces}
        grid_parts, head_parts, seen = [], [], 0
        for x in generate_chunks(ev.model, proto.n_fake, a, proto.routing, proto.seed + SAMPLE_SEED_OFFSET,
                                 proto.gen_batch_size, ev.device, proto.decoder_noise,
                                 chunk=max(proto.gen_batch_size, EVAL_CHUNK)):
            if not torch.isfinite(x).all():
                raise DataError(f"the model generated NaN or inf at alpha {a:g}")
            x = ev.as_seen(x, f"samples_alpha_{a:g}", seen)
            if seen < n_grid:
                grid_parts.append(x[:n_grid - seen])
            if a == ev.headline and keep_headline:
                head_parts.append(x)
            for sp in ev.spaces:
                f, lg = sp.fn(x, sp.key == "inception" and "is" in ev.metrics)
                feats[sp.key].append(f)
                if lg is not None:
                    logits[sp.key].append(lg)
            seen += x.shape[0]
        grids[a] = torch.cat(grid_parts)
        if head_parts:
            ev.headline_samples = torch.cat(head_parts)
        for sp in ev.spaces:
            f = np.concatenate(feats.pop(sp.key))
            lg = np.concatenate(logits[sp.key]) if logits[sp.key] else None
            for unit in chosen:
                ev.per_alpha[a].update(unit.per_alpha(ev, sp, f, lg))
        if ev.per_alpha[a]:
            ev.log(f"alpha {a:g}: " + ", ".join(units.fmt_value(k, v) for k, v in ev.per_alpha[a].items()))
    ev.timings["samples"] = time.time() - t
    return grids


def _sweep_report(ev: units.Evaluation, sweep: List[float]) -> Optional[Dict[str, Any]]:
    """Every per-alpha value as a list over the sweep's alphas (None without a sweep)."""
    if not sweep:
        return None
    report = {"alphas": sweep, "protocol": ev.protocol(n_real_used=ev.m), "values": {}}
    for k in ev.per_alpha[sweep[0]]:
        vals = [ev.per_alpha[a][k] for a in sweep]
        if isinstance(vals[0], dict):
            report["values"][k] = {kk: [v[kk] for v in vals] for kk in vals[0]}
        else:
            report["values"][k] = vals
    return report


def _report(run: str, out: str, cfg, ev: units.Evaluation, threads, sweep, grids, t0: float) -> Dict[str, Any]:
    from .. import __version__
    opts, proto = ev.opts, ev.proto
    summary = read_summary(run)
    report = {
        "run": os.path.abspath(run), "out": os.path.abspath(out), "xvae_fast_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "model": opts.model if opts.model != "vae" else cfg.model,
        "plan": ev.model.reference_label if opts.model != "vae" else cfg.plan_name,
        "evaluated": opts.model,
        **({"reference": ev.model.reference_name} if opts.model != "vae" else {}),
        "dataset": ev.info.name, "data_kind": ev.info.kind, "shape": list(ev.info.shape),
        "device": str(ev.device), "threads": threads, "metrics_requested": list(ev.metrics),
        "sample_alpha": ev.headline, "routing_applies": bool(ev.model.routings),
        "protocol": ev.protocol(n_real_used=ev.m, paper_default=proto.is_paper_default),
        "feature_nets": {sp.key: sp.info for sp in ev.spaces}, "metrics": ev.results,
        "sweep": _sweep_report(ev, sweep),
        "per_alpha": {f"{a:g}": ev.per_alpha[a] for a in ev.alphas}, "notes": ev.notes,
        "untrained_stages": _untrained_stages(summary, opts),
        # how the run was trained (world size, device, threads, precision, versions, revision)
        "training_provenance": summary.get("provenance"),
    }
    report["_grids"] = grids
    if ev.info.kind != "image":
        report["_reference"] = ev.real_seen[:N_SCATTER]
    ev.timings["total"] = time.time() - t0
    report["seconds"] = {k: round(v, 3) for k, v in ev.timings.items()}
    return report


def _untrained_stages(summary: Dict[str, Any], opts: EvalOptions) -> List[str]:
    """The run's train stages given 0 epochs, from its summary.json (none when it has no summary, or
    for a reference sampler, which does not use them)."""
    return list(summary.get("untrained_stages") or []) if opts.model == "vae" else []


def _offline_space(bundle, info, opts: EvalOptions, log) -> Optional[units.Space]:
    from .feature_classifier import DESCRIPTIONS, Recipe, data_space_features, get_classifier
    if getattr(bundle, "has_labels", False):
        recipe = Recipe()
        if opts.classifier_steps is not None:
            recipe = dataclasses.replace(recipe, min_steps=opts.classifier_steps,
                                         max_steps=opts.classifier_steps)
        fc = get_classifier(bundle, opts.cache_dir, recipe, progress=opts.progress, log=log)
        meta = dict(fc.meta)
        meta["note"] = (f"{fc.name} classifier, {meta['feature_dims']}-d features, test accuracy "
                        f"{meta['test_accuracy']:.4f}")

        def fn(x, need_logits=False, _fc=fc):
            return _fc.features(x), None
        label = "FD-LeNet" if fc.name == "lenet" else "FD-MLP"
        return units.Space(fc.name, fc.metric, label, DESCRIPTIONS[fc.name], fn, meta)
    if info.kind == "vector":
        d = int(np.prod(info.shape))
        meta = {"arch": "data", "feature_dims": d,
                "note": "no labels: the model-space vectors themselves are the features"}
        return units.Space("data", "fd_data", "FD-data", "Fréchet distance between the Gaussians fitted to "
                      "the (model-space) vectors themselves (offline; the dataset has no labels)",
                      lambda x, need_logits=False: (data_space_features(x), None), meta)
    return None
