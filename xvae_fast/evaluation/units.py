"""The metrics of an evaluation, one unit each. A unit declares what it applies to (the --metrics names
that ask for it, the DataInfo.extra entry of the benchmark it needs, the capabilities the evaluated
model must declare) and computes its entries of the report. evaluate_run (runner.py) chooses the units that
apply and runs them; the trainer's outputs (training/outputs.py) measure the clusters and the 2-D
benchmark of summary.json with ClusterModes and Histogram2D, so no metric is computed in two places.

A unit works in up to three places of an evaluation: `measure`, once, at its phase (`when`: "data" as
soon as the data is loaded, "test" once the real examples and the feature spaces are chosen, "real"
once the real examples' features are computed); `per_alpha`, on the features of each alpha's samples;
`finish`, after every alpha. UNITS lists them in the order they run, which is the order of the
report's entries; a unit that draws noise or samples has its own seeded stream (the offsets below)."""
from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch

from .frechet import frechet_distance, frechet_distance_from_features, gaussian_stats
from .histogram import DESCRIPTION as HISTOGRAM_DESCRIPTION
from .histogram import MODE_STDS, N_POINTS, toy2d_metrics
from .inception_score import inception_score
from .precision_recall import MAX_ROWS as PR_MAX_ROWS
from .precision_recall import precision_recall
from .sampling import generate, interpolate_pairs, reconstruct

# Each unit's noise: --seed + its offset (nll.py's NLL_SEED_OFFSET is 16)
RECON_SEED_OFFSET, REAL_RECON_SEED_OFFSET, SAMPLE_SEED_OFFSET, INTERP_SEED_OFFSET = 11, 12, 13, 14
HIST_SEED_OFFSET = 15   # the 2-D benchmark's 5,000 samples (histogram.N_POINTS, whatever --n-fake)


class Space:
    """A feature space: its name, its Fréchet-distance key and a function (images, need_logits) ->
    (features, logits or None)."""

    def __init__(self, key: str, fd_key: str, label: str, description: str, fn, info: Dict[str, Any]):
        self.key, self.fd_key, self.label, self.description = key, fd_key, label, description
        self.fn, self.info = fn, info


@dataclasses.dataclass
class Evaluation:
    """What the units of one evaluation share: the evaluated model and its data, the protocol, the
    real examples and their features, and the report's entries as they are filled in."""
    model: Any                          # the evaluated sampler: the trained model or a reference
    info: Any                           # the run's DataInfo
    proto: Any                          # the validated Protocol, its routing resolved
    opts: Any                           # the EvalOptions
    metrics: Tuple[str, ...]            # the metrics computed (those the data cannot give dropped)
    headline: float                     # alpha of the headline sample metrics
    alphas: List[float]                 # the sweep's alphas and the headline alpha
    device: torch.device
    log: Callable[[str], None]
    notes: List[str] = dataclasses.field(default_factory=list)
    timings: Dict[str, float] = dataclasses.field(default_factory=dict)
    bundle: Any = None                  # the DataBundle
    x_real: Optional[torch.Tensor] = None       # the seeded subset of real examples (model space)
    as_seen: Optional[Callable[..., torch.Tensor]] = None   # (x, name[, start]) -> x as the nets see it
    spaces: List[Space] = dataclasses.field(default_factory=list)
    real_seen: Optional[torch.Tensor] = None    # x_real as the nets see it
    real_feats: Dict[str, Optional[np.ndarray]] = dataclasses.field(default_factory=dict)
    real_stats: Dict[str, Tuple[np.ndarray, np.ndarray]] = dataclasses.field(default_factory=dict)
    real_logits: Optional[np.ndarray] = None
    headline_samples: Optional[torch.Tensor] = None   # kept when a unit asks (keeps_samples)
    results: Dict[str, Any] = dataclasses.field(default_factory=dict)    # report["metrics"]
    per_alpha: Dict[float, Dict[str, Any]] = dataclasses.field(default_factory=dict)

    @property
    def m(self) -> int:
        """The number of real examples used."""
        return int(self.x_real.shape[0])

    @property
    def fd_spaces(self) -> List[Space]:
        """The spaces whose Fréchet distance was asked for (--metrics fd for the offline one, fid for
        Inception)."""
        return [sp for sp in self.spaces if (sp.key == "inception" and "fid" in self.metrics)
                or (sp.key != "inception" and "fd" in self.metrics)]

    def protocol(self, **extra) -> Dict[str, Any]:
        """The protocol as recorded in an entry (a new dict each time), with `extra` added."""
        return dict(self.proto.to_dict(), **extra)


class Unit:
    """One metric: what it applies to, and the entries it computes."""
    requested_by: Tuple[str, ...] = ()  # --metrics names that ask for it; () for every evaluation
    data: Optional[str] = None          # the DataInfo.extra entry (a benchmark's ground truth) it needs
    model_offers: Tuple[str, ...] = ()  # capabilities the evaluated model must declare (models/generative.py)
    when: Optional[str] = None          # when `measure` runs: "data", "test" or "real" (see above)
    keeps_samples = False               # needs the headline alpha's samples (Evaluation.headline_samples)

    def fits(self, info) -> bool:
        """Whether the data is what this unit measures (training/outputs.py asks this too)."""
        return self.data is None or self.data in info.extra

    def applies(self, ev: Evaluation) -> bool:
        return ((not self.requested_by or any(m in ev.metrics for m in self.requested_by))
                and self.fits(ev.info) and all(getattr(ev.model, a) for a in self.model_offers))

    def measure(self, ev: Evaluation) -> None:
        pass

    def per_alpha(self, ev: Evaluation, sp: Space, feats: np.ndarray,
                  logits: Optional[np.ndarray]) -> Dict[str, Any]:
        """Entries of one alpha's row (report["per_alpha"]) from its samples' features in space sp."""
        return {}

    def finish(self, ev: Evaluation) -> None:
        pass


class NLL(Unit):
    """The importance-sampled -log p(x) of the test set (--nll), on its own seeded test subset; first,
    so its notes lead."""
    when = "data"

    def applies(self, ev: Evaluation) -> bool:
        return ev.opts.nll is not None

    def measure(self, ev: Evaluation) -> None:
        from .nll import evaluate_nll
        t = time.time()
        ev.results["nll"] = evaluate_nll(ev.model, ev.bundle.test, ev.info, ev.opts.nll, ev.proto.seed,
                                         ev.device, ev.notes, ev.log, ev.opts.progress)
        ev.timings["nll"] = time.time() - t


class Rec(Unit):
    """Rec: the squared reconstruction error of the test set, one stochastic pass."""
    requested_by = ("rec",)
    when = "test"

    def measure(self, ev: Evaluation) -> None:
        proto, info = ev.proto, ev.info
        t = time.time()
        _, sse = reconstruct(ev.model, ev.bundle.test, proto.seed + RECON_SEED_OFFSET, proto.gen_batch_size,
                             ev.device, ev.opts.progress, "reconstructing the test set")
        d = int(np.prod(info.shape))
        ev.results["rec"] = {"value": float(sse.mean()), "per_feature": float(sse.mean()) / d,
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
        ev.timings["rec"] = time.time() - t
        ev.log(f"Rec (test, {ev.results['rec']['n']} examples): {ev.results['rec']['value']:.4f}")


def _fd(ev: Evaluation, sp: Space, feats: np.ndarray) -> float:
    return frechet_distance(*ev.real_stats[sp.key], *gaussian_stats(feats), eps=ev.proto.eps)


class FrechetDistance(Unit):
    """The Fréchet distance to the real examples in each requested feature space (FD-LeNet, FD-MLP,
    FD-data; FID): of their reconstructions, and of the samples of every alpha."""
    requested_by = ("fd", "fid")
    when = "real"

    def measure(self, ev: Evaluation) -> None:
        t = time.time()
        recon_real, _ = reconstruct(ev.model, ev.x_real, ev.proto.seed + REAL_RECON_SEED_OFFSET,
                                    ev.proto.gen_batch_size, ev.device)
        recon_seen = ev.as_seen(recon_real, "recon")
        for sp in ev.fd_spaces:
            f, _ = sp.fn(recon_seen, False)
            ev.results.setdefault(sp.fd_key, {})["recon"] = {"value": _fd(ev, sp, f), "n_real": ev.m,
                                                             "n_recon": ev.m}
        ev.timings["recon_features"] = time.time() - t

    def per_alpha(self, ev, sp, feats, logits):
        return {sp.fd_key: _fd(ev, sp, feats)} if sp in ev.fd_spaces else {}

    def finish(self, ev: Evaluation) -> None:
        h = ev.per_alpha[ev.headline]
        for sp in ev.fd_spaces:
            entry = ev.results[sp.fd_key]
            entry["samples"] = {"value": h[sp.fd_key], "alpha": ev.headline, "n_real": ev.m,
                                "n_fake": ev.proto.n_fake}
            entry.update(description=sp.description, feature_net=sp.key,
                         protocol=ev.protocol(n_real_used=ev.m))


class InterpolationFD(Unit):
    """The UAE family's Interp: the Fréchet distance of the decoded slerp midpoints of random pairs of
    real examples (paper 003), in the spaces of the Fréchet distance."""
    requested_by = FrechetDistance.requested_by
    model_offers = ("interpolates",)
    when = "real"

    def measure(self, ev: Evaluation) -> None:
        t = time.time()
        interp = interpolate_pairs(ev.model, ev.x_real, ev.proto.seed + INTERP_SEED_OFFSET,
                                   ev.proto.gen_batch_size, ev.device)
        interp_seen = ev.as_seen(interp, "interp")
        for sp in ev.fd_spaces:
            f, _ = sp.fn(interp_seen, False)
            ev.results[sp.fd_key]["interp"] = {
                "value": _fd(ev, sp, f), "n_real": ev.m, "n_interp": int(interp.shape[0]), "t": 0.5,
                "description": "decoded slerp midpoints of the posterior means of random pairs of the "
                               "real examples (paper 003's Interp)"}
        ev.timings["interp_features"] = time.time() - t


class PrecisionRecall(Unit):
    """Improved precision (fidelity) and recall (coverage) of the samples, k-NN manifolds in each
    feature space whose real features are at hand."""
    requested_by = ("pr",)

    def per_alpha(self, ev, sp, feats, logits):
        if ev.real_feats.get(sp.key) is None:
            return {}
        return {f"pr_{sp.key}": precision_recall(ev.real_feats[sp.key], feats, ev.proto.pr_k,
                                                 max_rows=PR_MAX_ROWS, seed=ev.proto.seed,
                                                 device=ev.device)}

    def finish(self, ev: Evaluation) -> None:
        h = ev.per_alpha[ev.headline]
        for sp in ev.spaces:
            k = f"pr_{sp.key}"
            if k in h:
                ev.results[k] = dict(h[k], alpha=ev.headline, k=ev.proto.pr_k, n_real=ev.m,
                                     n_fake=ev.proto.n_fake, feature_net=sp.key,
                                     description="improved precision (fidelity) and recall (coverage) "
                                                 "of samples, k-NN manifolds (Kynkäänniemi et al. 2019)",
                                     protocol=ev.protocol(n_real_used=ev.m))


def _inception_score(logits: np.ndarray, splits: int) -> Dict[str, float]:
    mean, std = inception_score(logits, splits)
    return {"mean": mean, "std": std}


class InceptionScore(Unit):
    """The Inception Score of the samples (the FID network's logits), and of the real examples."""
    requested_by = ("is",)

    def per_alpha(self, ev, sp, feats, logits):
        return {"is": _inception_score(logits, ev.proto.is_splits)} if sp.key == "inception" else {}

    def finish(self, ev: Evaluation) -> None:
        h, proto = ev.per_alpha[ev.headline], ev.proto
        if "is" not in h:
            return
        ev.results["is"] = dict(h["is"], alpha=ev.headline, n=proto.n_fake, splits=proto.is_splits,
                                description="Inception Score of samples (FID Inception logits, "
                                            f"{proto.is_splits} splits; mean and std over splits)",
                                protocol=ev.protocol())
        if ev.real_logits is not None and ev.real_logits.shape[0] >= proto.is_splits:
            ev.results["is"]["real"] = _inception_score(ev.real_logits, proto.is_splits)


class Histogram2D(Unit):
    """The 2-D benchmark (data/toy2d.py): paper 001's histogram KL and JSDs of 5,000 samples, and the
    8gaussians mode coverage (histogram.py)."""
    data = "toy2d"

    @staticmethod
    def entry(info, xs: np.ndarray, **context) -> Dict[str, Any]:
        """The benchmark's entry for samples `xs` in data units; `context` (alpha, routing, ...) goes
        between the metrics and the description."""
        return dict(toy2d_metrics(xs, info.extra["toy2d"]), **context, description=HISTOGRAM_DESCRIPTION)

    def finish(self, ev: Evaluation) -> None:
        proto = ev.proto
        t = time.time()
        xs = generate(ev.model, N_POINTS, ev.headline, proto.routing, proto.seed + HIST_SEED_OFFSET,
                      proto.gen_batch_size, ev.device, proto.decoder_noise)
        entry = self.entry(ev.info, ev.info.to_data_space(xs).numpy(), alpha=ev.headline,
                           routing=proto.routing, decoder_noise=proto.decoder_noise)
        ev.results["toy2d"] = entry
        ev.timings["toy2d"] = time.time() - t
        ev.log("histogram metrics ({} samples, alpha {:g}): ".format(N_POINTS, ev.headline)
               + ", ".join(fmt_value(k, entry[k]) for k in ("hist_kl", "jsd_sintro", "jsd")))


def _mode_distances(info, x: np.ndarray) -> np.ndarray:
    """(n, modes) distances of points x (data units) to the cluster centres, in standard deviations."""
    x = np.asarray(x, dtype=np.float64)
    c = np.asarray(info.extra["centres"], dtype=np.float64)
    s = np.asarray(info.extra["stds"], dtype=np.float64)
    return np.linalg.norm(x[:, None, :] - c[None], axis=2) / s[None]


class ClusterModes(Unit):
    """The synthetic clusters: the fraction of decoded samples within 3 standard deviations of a mode,
    and how many samples each mode holds (whether every mode is covered)."""
    data = "centres"
    keeps_samples = True

    @staticmethod
    def within(info, x: np.ndarray) -> float:
        """Fraction of points x (data units) within MODE_STDS standard deviations of some mode."""
        return float((_mode_distances(info, x).min(axis=1) <= MODE_STDS).mean())

    @staticmethod
    def counts(info, x: np.ndarray) -> List[int]:
        """Per mode, how many points x (data units) lie within MODE_STDS standard deviations of it."""
        return [int(v) for v in (_mode_distances(info, x) <= MODE_STDS).sum(axis=0)]

    def finish(self, ev: Evaluation) -> None:
        xs = ev.info.to_data_space(ev.headline_samples).numpy()
        counts = self.counts(ev.info, xs)
        ev.results["modes"] = {"within_3std": self.within(ev.info, xs), "counts": counts,
                               "shares": [v / len(xs) for v in counts], "n": int(len(xs)),
                               "alpha": ev.headline, "routing": ev.proto.routing,
                               "description": "fraction of decoded samples within 3 standard deviations "
                                              "of a mode (data units), and each mode's share of the "
                                              "samples"}


# The order they run in: the order of the report's entries (nll, rec, the Fréchet distances, toy2d,
# modes, precision / recall, is) and of the per-alpha rows (FD, precision / recall, IS per space).
UNITS: Tuple[Unit, ...] = (NLL(), Rec(), FrechetDistance(), InterpolationFD(), Histogram2D(), ClusterModes(),
                           PrecisionRecall(), InceptionScore())


def fd_or_none(real: np.ndarray, fake: np.ndarray) -> Optional[float]:
    """The Fréchet distance between Gaussians fitted to two feature sets; None where it is not defined
    (degenerate samples), so a run's summary records that instead of failing (training/headline.py)."""
    try:
        v = float(frechet_distance_from_features(real, fake))
    except (ValueError, np.linalg.LinAlgError):
        return None
    return v if math.isfinite(v) else None


def fmt_value(k, v) -> str:
    """`k=v` for the log (a dict value as k=(kk=vv, ...))."""
    if isinstance(v, dict):
        return f"{k}=(" + ", ".join(f"{kk}={vv:.4g}" for kk, vv in v.items()) + ")"
    return f"{k}={v:.4g}"
