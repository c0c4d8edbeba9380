"""Evaluate a trained run: reconstruction error, Fréchet distances of samples and reconstructions
(offline classifier features and/or Inception), precision / recall, the Inception Score, and the
alpha sweep. `evaluate_run(run, EvalOptions(...))` returns the report that `xvae_fast.evaluate`
writes as eval.json / eval.md (see docs/evaluation.md)."""
from __future__ import annotations

import contextlib
import dataclasses
import inspect
import math
import os
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..errors import ConfigError, DataError
from ..outpaths import check_out_dir
from .frechet import frechet_distance, gaussian_stats, load_stats, save_stats
from .precision_recall import MAX_ROWS as PR_MAX_ROWS
from .protocol import Protocol

DEFAULT_SWEEP = (0.5, 0.75, 1.0, 1.25, 1.5)
METRICS = ("rec", "fd", "pr", "fid", "is")
DEFAULT_METRICS = ("rec", "fd", "pr")
ALIASES = {"all": METRICS, "default": DEFAULT_METRICS, "offline": DEFAULT_METRICS,
           "inception": ("fid", "is")}
RECON_SEED_OFFSET, REAL_RECON_SEED_OFFSET, SAMPLE_SEED_OFFSET, INTERP_SEED_OFFSET = 11, 12, 13, 14
HIST_SEED_OFFSET = 15   # the 2-D benchmark's 5,000 samples (histogram.N_POINTS, whatever --n-fake)
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
    model: str = "vae"                           # vae: the trained model; expost: the ex-post reference
    nll: Optional[Any] = None                    # nll.NLLOptions: the importance-sampled NLL (--nll)


class _Space:
    """A feature space: its name, its Fréchet-distance key and a function (images, need_logits) ->
    (features, logits or None)."""

    def __init__(self, key: str, fd_key: str, label: str, description: str, fn, info: Dict[str, Any]):
        self.key, self.fd_key, self.label, self.description = key, fd_key, label, description
        self.fn, self.info = fn, info


@contextlib.contextmanager
def _threads(n: Optional[int]):
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _generate(vae, n: int, alpha: float, routing: str, generator) -> torch.Tensor:
    """vae.generate with or without the routing argument (models without a mixture prior)."""
    params = inspect.signature(vae.generate).parameters
    if "routing" in params:
        return vae.generate(n, alpha, routing, generator=generator)
    return vae.generate(n, alpha, generator=generator)


def _uses_routing(vae) -> bool:
    return ("routing" in inspect.signature(vae.generate).parameters
            and getattr(vae, "mode", None) in ("mixture", "expost")
            and getattr(getattr(vae, "prior", None), "num_components", 1) > 1)


# vae: the trained model; expost: X-VAE's ex-post reference; stage1: the Two-Stage VAE's stage-1-only
# sampling (z ~ N(0, I) decoded by stage 1), the reference its second stage must beat; normal: the
# AVAE's decoder on N(0, I) instead of its predicted aggregate posterior N(0, (1 - h^2) I)
MODELS = ("vae", "expost", "stage1", "normal")
REFERENCE_PLANS = {"expost": "stage-1 AE + fitted prior", "stage1": "two-stage VAE, stage-1 decoder on N(0, I)",
                   "normal": "AVAE decoder on N(0, I)"}


def generate_chunks(vae, n: int, alpha: float, routing: str, seed: int, batch: int, device,
                    decoder_noise: bool = False, chunk: int = 0):
    """n samples (model space, CPU float32) as an iterator of chunks of at least `chunk` rows (the
    last may be smaller), drawn in batches of `batch` from one seeded generator, so every alpha sees
    the same noise and memory stays one chunk whatever n; with decoder_noise, x ~ p(x | z) instead of
    its mean."""
    from ..models.likelihood import decoder_likelihood
    g = torch.Generator(device=device).manual_seed(seed)
    parts, rows = [], 0
    for s in range(0, n, batch):
        with torch.no_grad():
            x = _generate(vae, min(batch, n - s), alpha, routing, g)
            if decoder_noise:
                x = decoder_likelihood(vae).draw(x, generator=g)
        parts.append(x.float().cpu())
        rows += parts[-1].shape[0]
        if rows >= chunk:
            yield torch.cat(parts)
            parts, rows = [], 0
    if parts:
        yield torch.cat(parts)


def generate(vae, n: int, alpha: float, routing: str, seed: int, batch: int, device,
             decoder_noise: bool = False) -> torch.Tensor:
    """generate_chunks, concatenated in memory."""
    return torch.cat(list(generate_chunks(vae, n, alpha, routing, seed, batch, device, decoder_noise,
                                          chunk=n)))


@torch.no_grad()
def reconstruct(vae, ds_or_x, seed: int, batch: int, device, progress: bool = False, desc: str = ""):
    """(reconstructions of x (CPU), per-example squared errors summed over features) for a tensor, or
    for a whole XDataset when ds_or_x is one (then the reconstructions are not kept)."""
    is_tensor = isinstance(ds_or_x, torch.Tensor)
    n = ds_or_x.shape[0] if is_tensor else len(ds_or_x)
    devices = [device] if torch.device(device).type == "cuda" else []
    recons, sse = [], []
    starts = range(0, n, batch)
    if progress and n > 20 * batch:
        from ..progress import progress_bar
        starts = progress_bar(starts, desc=desc, unit="batch")
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for s in starts:
            x = ds_or_x[s:s + batch] if is_tensor else ds_or_x.get_batch(torch.arange(s, min(n, s + batch)))
            x = x.float().to(device)
            xh = vae(x)["xhat"].float()
            sse.append(((xh - x) ** 2).flatten(1).sum(1).double().cpu())
            if is_tensor:
                recons.append(xh.cpu())
    return (torch.cat(recons) if is_tensor else None), torch.cat(sse)


@torch.no_grad()
def interpolate_pairs(model, x: torch.Tensor, seed: int, batch: int, device) -> torch.Tensor:
    """model.interpolate(x[i], x[perm[i]], 0.5) for a seeded random pairing of the rows of x."""
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(x.shape[0], generator=g)
    out = []
    for s in range(0, x.shape[0], batch):
        a = x[s:s + batch].float().to(device)
        b = x[perm[s:s + batch]].float().to(device)
        out.append(model.interpolate(a, b, 0.5).float().cpu())
    return torch.cat(out)


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
    log = _log_fn(opts)
    t0 = time.time()
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
    inception_wanted = "fid" in metrics or "is" in metrics
    if (opts.fid_stats_in or opts.fid_stats_out) and "fid" not in metrics:
        raise ConfigError("--fid-stats-in / --fid-stats-out are statistics of Inception features; they "
                          "need the FID (--metrics fid or --metrics inception)")
    if opts.fid_stats_out and opts.fid_stats_in:
        raise ConfigError("--fid-stats-out and --fid-stats-in exclude each other (the statistics read "
                          "in would just be written back)")
    if opts.fid_stats_out and not str(opts.fid_stats_out).endswith(".npz"):
        raise ConfigError(f"--fid-stats-out must end in .npz, got {opts.fid_stats_out!r}")

    if opts.model not in MODELS:
        raise ConfigError(f"the evaluated model must be one of {MODELS}, got {opts.model!r}")
    if opts.nll is not None:
        opts.nll.validate()
        if opts.model != "vae":
            raise ConfigError(f"--nll evaluates the trained model, not the {opts.model!r} reference sampler")
    out = opts.out or (run if os.path.isdir(run) else os.path.dirname(os.path.abspath(run)))
    check_out_dir(out, "--out")   # before any work; the folder is created when the report is written
    from ..data import load_dataset
    if opts.model == "expost":
        from ..training import load_expost
        cfg, info, vae, _ = load_expost(run, opts.device)
    elif opts.model != "vae":
        from ..training import load_recipe
        cfg, info, recipe, _ = load_recipe(run, opts.device)
        samplers = recipe.reference_models()
        if opts.model not in samplers:
            raise ConfigError(f"run {run!r} ({cfg.model}) has no {opts.model!r} reference sampler; "
                              f"it has {', '.join(samplers) or 'none'}")
        vae = samplers[opts.model]
    else:
        from ..training import load_run
        cfg, info, vae, _ = load_run(run, opts.device)
    dev = next(vae.parameters()).device
    if opts.nll is not None:           # before any work: a model without a density is refused here
        from .nll import check_nll_supported
        check_nll_supported(vae)
    if proto.routing is None:   # the run's own routing (per-row for models without a routed prior)
        proto = dataclasses.replace(proto, routing=getattr(vae, "routing", None) or "per-row")
    threads = opts.threads if opts.threads is not None else getattr(cfg, "threads", None)
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ConfigError(f"--threads must be a positive integer, got {threads!r}")
    headline = float(opts.sample_alpha if opts.sample_alpha is not None else getattr(cfg, "alpha", 1.0))
    alphas = sorted(set(sweep) | {headline})
    if info.kind != "image" and proto.png:
        raise ConfigError(f"--png-protocol applies to images; dataset {info.name!r} holds vectors")
    if info.kind != "image" and inception_wanted:
        raise ConfigError(f"the Inception metrics (fid, is) need images; dataset {info.name!r} holds "
                          f"{info.shape[0]}-d vectors; use the offline Fréchet distance (--metrics "
                          "rec,fd,pr)")
    if "is" in metrics and proto.n_fake < proto.is_splits:
        raise ConfigError(f"the Inception Score over --is-splits {proto.is_splits} needs --n-fake >= "
                          f"{proto.is_splits}, got {proto.n_fake}")
    notes: List[str] = []
    untrained = _untrained_stages(run) if opts.model == "vae" else []
    if untrained:
        notes.append(f"this run is untrained ({', '.join(untrained)}: 0 epochs): these are the "
                     "metrics of a model at its initialisation")
    timings: Dict[str, float] = {}
    inception_net = None
    if inception_wanted:               # first, so missing weights fail before any work
        from .inception import load_inception
        t = time.time()
        inception_net = load_inception(opts.inception_weights, opts.download, dev, proto.inception_size)
        timings["load_inception"] = time.time() - t

    with _threads(threads):
        t = time.time()
        bundle = load_dataset(cfg)
        timings["load_data"] = time.time() - t
        nll_entry = None
        if opts.nll is not None:
            from .nll import evaluate_nll
            t = time.time()
            nll_entry = evaluate_nll(vae, bundle.test, info, opts.nll, proto.seed, dev, notes, log,
                                     opts.progress)
            timings["nll"] = time.time() - t
        split = bundle.test if proto.real_split == "test" else bundle.train
        n_avail = len(split)
        m = min(proto.n_real, n_avail)
        if m <= proto.pr_k and "pr" in metrics:
            raise ConfigError(f"precision / recall with --pr-k {proto.pr_k} need more than {proto.pr_k} "
                              f"real examples; the {proto.real_split} split has {n_avail}")
        if m < 2:
            raise DataError(f"the {proto.real_split} split has {n_avail} example(s); the Fréchet "
                            "distance needs at least 2")
        if m < proto.n_real:
            notes.append(f"the {proto.real_split} split has {n_avail} examples, fewer than --n-real "
                         f"{proto.n_real}; all {n_avail} are used")
        if "pr" in metrics and max(m, proto.n_fake) > PR_MAX_ROWS:
            # exact k-NN manifolds cost O(N^2) time: a seeded subset keeps them to minutes
            notes.append(f"precision / recall use a seeded random subset of {PR_MAX_ROWS} vectors of "
                         f"each set larger than that (--n-fake {proto.n_fake}, {m} real): the time of "
                         "their exact k-NN manifolds grows as N^2; the pr entries give n_real_used and "
                         "n_fake_used")
            log(notes[-1])
        idx = np.sort(np.random.default_rng(proto.seed).permutation(n_avail)[:m])
        x_real = split.get_batch(torch.as_tensor(idx)).float()

        def prep(x: torch.Tensor) -> torch.Tensor:
            return x.clamp(0.0, 1.0) if info.kind == "image" else x

        # -- feature spaces ---------------------------------------------------------------------
        spaces: List[_Space] = []
        feature_nets: Dict[str, Any] = {}
        offline_wanted = "fd" in metrics or "pr" in metrics
        if offline_wanted:
            t = time.time()
            space = _offline_space(bundle, info, opts, log)
            timings["feature_classifier"] = time.time() - t
            if space is None:
                msg = (f"dataset {info.name!r} has no labels, so the offline feature classifier (and "
                       "with it the offline Fréchet distance and precision / recall) is not available; "
                       "use the Inception metrics (--metrics rec,fid,is; see docs/evaluation.md)")
                if explicit:
                    raise ConfigError(msg)
                notes.append(msg)
                metrics = tuple(mm for mm in metrics if mm not in ("fd", "pr"))
            else:
                spaces.append(space)
                feature_nets[space.key] = space.info
                log(f"offline features: {space.label} ({space.info.get('note', '')})".rstrip(" ()"))
        if inception_wanted:
            from .inception import inception_outputs
            net, source = inception_net
            inc_info = {"network": "pytorch-fid FID Inception-v3 (pt_inception-2015-12-05)",
                        "weights": source, "feature_dims": proto.fid_dims,
                        "features": ("pool3, 2048-d" if proto.fid_dims == 2048 else
                                     f"{proto.fid_dims}-d block output, average-pooled (pytorch-fid --dims)"),
                        "resize_to": proto.inception_size,
                        "grayscale": "replicated to RGB", "input_range": "[0, 1] -> [-1, 1]",
                        "is_logits": "1008 classes, fc without bias (as the original Inception Score)"}
            feature_nets["inception"] = inc_info

            def inc_fn(x, need_logits, _net=net):
                return inception_outputs(_net, x, proto.batch_size, dev, progress=opts.progress,
                                         dims=proto.fid_dims, logits=need_logits)
            spaces.append(_Space("inception", "fid", "FID", "Fréchet Inception Distance: pytorch-fid's "
                                 f"Inception-v3, {inc_info['features']}", inc_fn, inc_info))
            if proto.inception_size != 299:
                notes.append(f"Inception inputs resized to {proto.inception_size}, not 299: a quick "
                             "check, not the FID protocol")
            if proto.fid_dims != 2048:
                notes.append(f"FID in {proto.fid_dims}-d Inception features, not the 2048-d pool3 "
                             "features of the protocol: not comparable with published FIDs")

        # -- real data, reconstructions ---------------------------------------------------------
        png_dir = os.path.join(out, "eval_png")

        def as_seen(x: torch.Tensor, name: str, start: int = 0) -> torch.Tensor:
            x = prep(x)
            if proto.png:
                from .images import png_roundtrip
                x = png_roundtrip(x, os.path.join(png_dir, name), start)
            return x

        results: Dict[str, Any] = {} if nll_entry is None else {"nll": nll_entry}
        if "rec" in metrics:
            t = time.time()
            _, sse = reconstruct(vae, bundle.test, proto.seed + RECON_SEED_OFFSET, proto.gen_batch_size,
                                 dev, opts.progress, "reconstructing the test set")
            d = int(np.prod(info.shape))
            results["rec"] = {"value": float(sse.mean()), "per_feature": float(sse.mean()) / d,
                              "n": int(sse.numel()), "split": "test",
                              "description": "reconstruction error on the test set: squared error "
                                             "summed over the features of an example (the training "
                                             "objective's units, the paper's Rec), averaged over "
                                             "examples; one stochastic pass (vae(x)['xhat']), model "
                                             "space" + (" (standardised vectors)" if info.kind == "vector"
                                                        and info.mean is not None else ""),
                              "protocol": {"seed": proto.seed,
                                           "noise_seed": proto.seed + RECON_SEED_OFFSET,
                                           "gen_batch_size": proto.gen_batch_size}}
            timings["rec"] = time.time() - t
            log(f"Rec (test, {results['rec']['n']} examples): {results['rec']['value']:.4f}")

        real_seen = as_seen(x_real, "real")
        real_feats: Dict[str, Optional[np.ndarray]] = {}
        real_stats: Dict[str, Tuple[np.ndarray, np.ndarray]] = {}
        real_logits = None
        for sp in spaces:
            t = time.time()
            if sp.key == "inception" and opts.fid_stats_in:
                real_stats[sp.key] = load_stats(opts.fid_stats_in, dims=proto.fid_dims)
                real_feats[sp.key] = None
                sp.info["real_stats"] = os.path.abspath(opts.fid_stats_in)
                if "pr" in metrics:
                    notes.append("precision / recall in Inception features need the real features, "
                                 "not only their statistics: skipped with --fid-stats-in")
                if "is" not in metrics:
                    continue
            f, lg = sp.fn(real_seen, sp.key == "inception" and "is" in metrics)
            if sp.key == "inception":
                real_logits = lg
            if sp.key not in real_stats:
                real_feats[sp.key] = f
                real_stats[sp.key] = gaussian_stats(f)
            timings[f"real_features_{sp.key}"] = time.time() - t
        if opts.fid_stats_out:
            save_stats(opts.fid_stats_out, *real_stats["inception"])
            log(f"wrote the real-image Inception statistics to {opts.fid_stats_out}")

        fd_spaces = [sp for sp in spaces if (sp.key == "inception" and "fid" in metrics)
                     or (sp.key != "inception" and "fd" in metrics)]
        if fd_spaces:
            t = time.time()
            recon_real, _ = reconstruct(vae, x_real, proto.seed + REAL_RECON_SEED_OFFSET,
                                        proto.gen_batch_size, dev)
            recon_seen = as_seen(recon_real, "recon")
            for sp in fd_spaces:
                f, _ = sp.fn(recon_seen, False)
                results.setdefault(sp.fd_key, {})["recon"] = {
                    "value": frechet_distance(*real_stats[sp.key], *gaussian_stats(f), eps=proto.eps),
                    "n_real": m, "n_recon": m}
            timings["recon_features"] = time.time() - t
            if hasattr(vae, "interpolate"):   # the UAE's spherical midpoints of random real pairs
                t = time.time()
                interp = interpolate_pairs(vae, x_real, proto.seed + INTERP_SEED_OFFSET,
                                           proto.gen_batch_size, dev)
                interp_seen = as_seen(interp, "interp")
                for sp in fd_spaces:
                    f, _ = sp.fn(interp_seen, False)
                    results[sp.fd_key]["interp"] = {
                        "value": frechet_distance(*real_stats[sp.key], *gaussian_stats(f), eps=proto.eps),
                        "n_real": m, "n_interp": int(interp.shape[0]), "t": 0.5,
                        "description": "decoded slerp midpoints of the posterior means of random pairs "
                                       "of the real examples (paper 003's Interp)"}
                timings["interp_features"] = time.time() - t

        # -- samples per alpha ------------------------------------------------------------------
        per_alpha: Dict[float, Dict[str, Any]] = {a: {} for a in alphas}
        grids: Dict[float, torch.Tensor] = {}
        headline_samples = None
        t = time.time()
        n_grid = opts.grid_size if info.kind == "image" else max(opts.grid_size, N_SCATTER)
        keep_headline = "centres" in info.extra   # the clusters' mode counts need the samples
        for a in alphas:
            # Streamed in chunks: only the features (and the Inception logits) of all n_fake samples
            # are kept, never the samples themselves, so memory does not grow with the image size.
            feats: Dict[str, List[np.ndarray]] = {sp.key: [] for sp in spaces}
            logits: Dict[str, List[np.ndarray]] = {sp.key: [] for sp in spaces}
            grid_parts, head_parts, seen = [], [], 0
            for x in generate_chunks(vae, proto.n_fake, a, proto.routing, proto.seed + SAMPLE_SEED_OFFSET,
                                     proto.gen_batch_size, dev, proto.decoder_noise,
                                     chunk=max(proto.gen_batch_size, EVAL_CHUNK)):
                if not torch.isfinite(x).all():
                    raise DataError(f"the model generated NaN or inf at alpha {a:g}")
                x = as_seen(x, f"samples_alpha_{a:g}", seen)
                if seen < n_grid:
                    grid_parts.append(x[:n_grid - seen])
                if a == headline and keep_headline:
                    head_parts.append(x)
                for sp in spaces:
                    f, lg = sp.fn(x, sp.key == "inception" and "is" in metrics)
                    feats[sp.key].append(f)
                    if lg is not None:
                        logits[sp.key].append(lg)
                seen += x.shape[0]
            grids[a] = torch.cat(grid_parts)
            if head_parts:
                headline_samples = torch.cat(head_parts)
            for sp in spaces:
                f = np.concatenate(feats.pop(sp.key))
                lg = np.concatenate(logits[sp.key]) if logits[sp.key] else None
                r = per_alpha[a]
                if sp in fd_spaces:
                    r[sp.fd_key] = frechet_distance(*real_stats[sp.key], *gaussian_stats(f), eps=proto.eps)
                if "pr" in metrics and real_feats.get(sp.key) is not None:
                    r[f"pr_{sp.key}"] = _pr(real_feats[sp.key], f, proto.pr_k, proto.seed, dev)
                if sp.key == "inception" and "is" in metrics:
                    r["is"] = _is(lg, proto.is_splits)
            if per_alpha[a]:
                log(f"alpha {a:g}: " + ", ".join(_fmt(k, v) for k, v in per_alpha[a].items()))
        timings["samples"] = time.time() - t
        if "toy2d" in info.extra:   # the 2-D benchmark: paper 001's histogram KL / JSD, mode coverage
            from .histogram import DESCRIPTION, N_POINTS, toy2d_metrics
            t = time.time()
            xs = generate(vae, N_POINTS, headline, proto.routing, proto.seed + HIST_SEED_OFFSET,
                          proto.gen_batch_size, dev, proto.decoder_noise)
            results["toy2d"] = dict(toy2d_metrics(info.to_data_space(xs).numpy(), info.extra["toy2d"]),
                                    alpha=headline, routing=proto.routing,
                                    decoder_noise=proto.decoder_noise, description=DESCRIPTION)
            timings["toy2d"] = time.time() - t
            log("histogram metrics ({} samples, alpha {:g}): ".format(N_POINTS, headline)
                + ", ".join(_fmt(k, results["toy2d"][k]) for k in ("hist_kl", "jsd_sintro", "jsd")))

    # -- assemble ----------------------------------------------------------------------------
    pdict = proto.to_dict()
    h = per_alpha[headline]
    if "centres" in info.extra:   # the synthetic clusters: in-mode fraction and per-mode shares
        from ..training.metrics import mode_fraction, nearest_mode_counts
        xs = info.to_data_space(headline_samples).numpy()
        c, s = info.extra["centres"], info.extra["stds"]
        counts = nearest_mode_counts(xs, c, s)
        results["modes"] = {"within_3std": mode_fraction(xs, c, s), "counts": counts,
                            "shares": [v / len(xs) for v in counts], "n": int(len(xs)),
                            "alpha": headline, "routing": proto.routing,
                            "description": "fraction of decoded samples within 3 standard deviations "
                                           "of a mode (data units), and each mode's share of the "
                                           "samples"}
    for sp in fd_spaces:
        entry = results[sp.fd_key]
        entry["samples"] = {"value": h[sp.fd_key], "alpha": headline, "n_real": m, "n_fake": proto.n_fake}
        entry.update(description=sp.description, feature_net=sp.key, protocol=dict(pdict, n_real_used=m))
    for sp in spaces:
        k = f"pr_{sp.key}"
        if k in h:
            results[k] = dict(h[k], alpha=headline, k=proto.pr_k, n_real=m, n_fake=proto.n_fake,
                              feature_net=sp.key,
                              description="improved precision (fidelity) and recall (coverage) of "
                                          "samples, k-NN manifolds (Kynkäänniemi et al. 2019)",
                              protocol=dict(pdict, n_real_used=m))
    if "is" in h:
        results["is"] = dict(h["is"], alpha=headline, n=proto.n_fake, splits=proto.is_splits,
                             description="Inception Score of samples (FID Inception logits, "
                                         f"{proto.is_splits} splits; mean and std over splits)",
                             protocol=dict(pdict))
        if real_logits is not None and real_logits.shape[0] >= proto.is_splits:
            results["is"]["real"] = _is(real_logits, proto.is_splits)
    sweep_report = None
    if sweep:
        sweep_report = {"alphas": sweep, "protocol": dict(pdict, n_real_used=m), "values": {}}
        keys = [k for k in per_alpha[sweep[0]]]
        for k in keys:
            vals = [per_alpha[a][k] for a in sweep]
            if isinstance(vals[0], dict):
                sweep_report["values"][k] = {kk: [v[kk] for v in vals] for kk in vals[0]}
            else:
                sweep_report["values"][k] = vals
    from .. import __version__
    report = {
        "run": os.path.abspath(run), "out": os.path.abspath(out), "xvae_fast_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "model": opts.model if opts.model != "vae" else getattr(cfg, "model", None),
        "plan": (REFERENCE_PLANS[opts.model] if opts.model != "vae" else getattr(cfg, "plan_name", None)),
        "evaluated": opts.model,
        "dataset": info.name, "data_kind": info.kind, "shape": list(info.shape),
        "device": str(dev), "threads": threads, "metrics_requested": list(metrics),
        "sample_alpha": headline, "routing_applies": _uses_routing(vae),
        "protocol": dict(pdict, n_real_used=m, paper_default=proto.is_paper_default),
        "feature_nets": feature_nets, "metrics": results, "sweep": sweep_report,
        "per_alpha": {f"{a:g}": per_alpha[a] for a in alphas}, "notes": notes,
        "untrained_stages": untrained,
        # how the run was trained (world size, device, threads, precision, versions, revision)
        "training_provenance": _run_summary(run).get("provenance"),
    }
    report["_grids"] = grids
    if info.kind != "image":
        report["_reference"] = real_seen[:N_SCATTER]
    timings["total"] = time.time() - t0
    report["seconds"] = {k: round(v, 3) for k, v in timings.items()}
    return report


def _run_summary(run: str) -> Dict[str, Any]:
    """The run's summary.json ({} when it has none, or an unreadable one)."""
    import json
    folder = run if os.path.isdir(run) else os.path.dirname(os.path.abspath(run))
    try:
        with open(os.path.join(folder, "summary.json"), encoding="utf-8") as f:
            s = json.load(f)
        return s if isinstance(s, dict) else {}
    except (OSError, ValueError):
        return {}


def _untrained_stages(run: str) -> List[str]:
    """The run's train stages given 0 epochs, from its summary.json (none when it has no summary)."""
    return list(_run_summary(run).get("untrained_stages") or [])


def _pr(real, fake, k, seed, device):
    from .precision_recall import precision_recall
    return precision_recall(real, fake, k, max_rows=PR_MAX_ROWS, seed=seed, device=device)


def _is(logits, splits):
    from .inception_score import inception_score
    mean, std = inception_score(logits, splits)
    return {"mean": mean, "std": std}


def _fmt(k, v) -> str:
    if isinstance(v, dict):
        return f"{k}=(" + ", ".join(f"{kk}={vv:.4g}" for kk, vv in v.items()) + ")"
    return f"{k}={v:.4g}"


def _offline_space(bundle, info, opts: EvalOptions, log) -> Optional[_Space]:
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
        return _Space(fc.name, fc.metric, label, DESCRIPTIONS[fc.name], fn, meta)
    if info.kind == "vector":
        d = int(np.prod(info.shape))
        meta = {"arch": "data", "feature_dims": d,
                "note": "no labels: the model-space vectors themselves are the features"}
        return _Space("data", "fd_data", "FD-data", "Fréchet distance between the Gaussians fitted to "
                      "the (model-space) vectors themselves (offline; the dataset has no labels)",
                      lambda x, need_logits=False: (data_space_features(x), None), meta)
    return None
