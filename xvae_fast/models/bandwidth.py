"""The AVAE's KDE bandwidth (paper 002, Sec. III-B4, Eqs. 10-11; SPEC-related 2.1).

h_opt(l, m) minimises KL(N(0, I_l) || q_h), q_h the isotropic Gaussian KDE with bandwidth h of m draws
X ~ N(0, I_l). Up to a constant in h the KL is F(h) = -E_{t ~ N(0, I)} log q_h(t), estimated with
target draws t that are FRESH (independent of X: using the KDE points themselves drives h -> 0) and
minimised over s = log h. The AVAE then uses the bias-corrected bandwidth of Eq. 11,
h = h_opt / sqrt(1 + h_opt^2) (< 1 always), and its encodings converge to N(0, (1 - h^2) I).

The authors' code (KDE_Bandwidth/) runs Adam on h with 1,000 fresh targets per iteration for 3 trials
(each with its own m KDE draws) and averages the trials. Here each trial is deterministic: a seeded
KDE draw, `targets` scrambled-Sobol targets mapped through the normal quantile (quasi-random: the same
expectation with a far smaller error than as many random draws), and a safeguarded Newton search on
dF/ds = 0 (bisection whenever a Newton step leaves the bracket), which needs about 5 evaluations. The
derivatives come from the pairwise squared distances D_ij = ||t_i - x_j||^2 with the row softmax
r_ij of -D_ij / (2 h^2): dF/ds = l - mean_i sum_j r_ij D_ij / h^2, d2F/ds2 = mean_i [2 E_r D / h^2 -
Var_r D / h^4]. (The library's `kde_log_prob` op gives no gradient to h, so the estimator computes its
1-D objective from the distances itself; `kl_estimate` evaluates the KL through the op.)

Results are cached per (latent size, m, estimator settings): in the process, and on disk in one JSON
file (`cache_path()`: $XVAE_FAST_BANDWIDTH_CACHE, else $XVAE_FAST_CACHE/bandwidth.json, else
$XDG_CACHE_HOME/xvae_fast/bandwidth.json, else ~/.cache/xvae_fast/bandwidth.json), written atomically.
A missing, corrupt or unwritable cache never fails: the value is computed instead.

A bottom-layer module: it imports torch (and the ops, for `kl_estimate`) and nothing of the models or
the trainer.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import threading
from typing import Any, Dict, List, Optional, Tuple

import torch

from ..atomic_file import atomic_open

VERSION = 1                 # bump when the estimator changes: older cache entries are then ignored
TARGETS = 1024              # Sobol targets per trial (a power of two keeps the Sobol set balanced)
TRIALS = 3                  # the code's num_trial
SEED = 0
LOG_H_BRACKET = (math.log(0.01), math.log(100.0))
_TOL = 1e-7                 # on log h
_MAX_EVALS = 60
_MAX_CACHED_DISTANCES = 50_000_000     # N * m entries (float32) kept between Newton steps
_CHUNK = 256

_MEMORY: Dict[str, Dict[str, Any]] = {}
_LOCK = threading.Lock()


@dataclasses.dataclass(frozen=True)
class Bandwidth:
    """The bandwidth a run uses: h_opt (Eq. 10), h = h_opt / sqrt(1 + h_opt^2) (Eq. 11), where it came
    from ("computed", "cache" or "flag"), and the per-trial h_opt values when estimated."""
    latent: int
    m: int
    h_opt: float
    h: float
    source: str
    trials: Tuple[float, ...] = ()
    settings: Tuple[Tuple[str, Any], ...] = ()

    def to_dict(self) -> Dict[str, Any]:
        return {"latent": self.latent, "m": self.m, "h_opt": self.h_opt, "h": self.h,
                "source": self.source, "trials": list(self.trials), "estimator": dict(self.settings)}


def scaled_bandwidth(h_opt: float) -> float:
    """Eq. 11: h = alpha h_opt with alpha^2 = 1 / (1 + h_opt^2), so h < 1 for every h_opt."""
    h_opt = float(h_opt)
    if not (h_opt > 0 and math.isfinite(h_opt)):
        raise ValueError(f"h_opt must be a finite number > 0, got {h_opt!r}")
    return h_opt / math.sqrt(1.0 + h_opt * h_opt)


def unscaled_bandwidth(h: float) -> float:
    """The inverse of Eq. 11: the h_opt that gives a used bandwidth 0 < h < 1."""
    h = float(h)
    if not 0 < h < 1:
        raise ValueError(f"a used bandwidth must lie in (0, 1), got {h!r}")
    return h / math.sqrt(1.0 - h * h)


# -- the estimator ---------------------------------------------------------------------------------
def normal_targets(n: int, latent: int, generator: torch.Generator) -> torch.Tensor:
    """n quasi-random N(0, I_latent) draws (float64): scrambled Sobol points through the normal
    quantile, the scrambling seeded from `generator`."""
    seed = int(torch.randint(0, 2 ** 31 - 1, (1,), generator=generator))
    if latent > torch.quasirandom.SobolEngine.MAXDIM:
        return torch.randn(n, latent, generator=generator, dtype=torch.float64)
    u = torch.quasirandom.SobolEngine(latent, scramble=True, seed=seed).draw(n, dtype=torch.float64)
    u = u.clamp(1e-12, 1 - 1e-12)
    return math.sqrt(2.0) * torch.erfinv(2.0 * u - 1.0)


class _Distances:
    """Squared distances between targets (N, l) and points (m, l) in row chunks, float32; kept in
    memory between evaluations when N m is small enough, else recomputed per chunk."""

    def __init__(self, targets: torch.Tensor, points: torch.Tensor):
        self.t = targets.float()
        self.x = points.float()
        self.xn = (self.x * self.x).sum(1)
        n = self.t.shape[0]
        self.starts = list(range(0, n, _CHUNK))
        keep = n * self.x.shape[0] <= _MAX_CACHED_DISTANCES
        self.cached = [self._compute(s) for s in self.starts] if keep else None

    def _compute(self, s: int) -> torch.Tensor:
        t = self.t[s:s + _CHUNK]
        d = torch.addmm((t * t).sum(1, keepdim=True), t, self.x.T, alpha=-2.0)
        return d.add_(self.xn[None]).clamp_min_(0.0)

    def chunks(self):
        if self.cached is not None:
            yield from self.cached
        else:
            for s in self.starts:
                yield self._compute(s)


def _derivatives(dist: _Distances, s: float, latent: int) -> Tuple[float, float]:
    """(dF/ds, d2F/ds2) at s = log h."""
    h2 = math.exp(2.0 * s)
    n = 0
    e_sum = v_sum = 0.0
    for d in dist.chunks():
        r = torch.softmax(d * (-0.5 / h2), dim=1)
        rd = r.mul_(d)
        e1 = rd.sum(1).double()
        e2 = rd.mul_(d).sum(1).double()
        e_sum += float(e1.sum())
        v_sum += float((e2 - e1 * e1).clamp_min(0).sum())
        n += d.shape[0]
    e_mean, v_mean = e_sum / n, v_sum / n
    return latent - e_mean / h2, 2.0 * e_mean / h2 - v_mean / (h2 * h2)


def argmin_log_bandwidth(targets: torch.Tensor, points: torch.Tensor, s0: Optional[float] = None
                         ) -> Tuple[float, int]:
    """(argmin over s = log h of F(s) = -mean_i log q_h(targets_i), evaluations used) by safeguarded
    Newton on dF/ds: dF/ds < 0 as h -> 0 (the nearest point dominates) and -> l > 0 as h -> infinity,
    so the bracket LOG_H_BRACKET holds the root."""
    latent = points.shape[1]
    dist = _Distances(targets, points)
    lo, hi = LOG_H_BRACKET
    s = silverman_log_bandwidth(latent, points.shape[0]) if s0 is None else float(s0)
    for n in range(1, _MAX_EVALS + 1):
        g, H = _derivatives(dist, s, latent)
        if g < 0:
            lo = max(lo, s)
        else:
            hi = min(hi, s)
        new = s - g / H if H > 0 else None
        if new is None or not lo < new < hi:
            new = 0.5 * (lo + hi)
        if abs(new - s) < _TOL:
            return new, n
        s = new
    return s, _MAX_EVALS


def silverman_log_bandwidth(latent: int, m: int) -> float:
    """log of Silverman's rule for N(0, I): the Newton search's starting point."""
    return math.log((4.0 / (latent + 2)) ** (1.0 / (latent + 4)) * m ** (-1.0 / (latent + 4)))


def estimate_h_opt(latent: int, m: int, targets: int = TARGETS, trials: int = TRIALS,
                   seed: int = SEED) -> Tuple[float, List[float]]:
    """(mean of the trials' h_opt, per-trial h_opt) for a latent size and m KDE points; each trial
    draws its own m points and its own fresh targets from one seeded generator."""
    _check_sizes(latent, m, targets, trials)
    g = torch.Generator().manual_seed(int(seed))
    values = []
    for _ in range(trials):
        points = torch.randn(m, latent, generator=g, dtype=torch.float64)
        t = normal_targets(targets, latent, g)
        s, _ = argmin_log_bandwidth(t, points)
        values.append(math.exp(s))
    return sum(values) / len(values), values


def kl_estimate(targets: torch.Tensor, points: torch.Tensor, h: float, ops=None) -> float:
    """KL(N(0, I) || q_h) ~ mean_i [log N(t_i; 0, I) - log q_h(t_i)] through `ops.kde_log_prob`
    (default: the plain-PyTorch reference), in float64, in row chunks."""
    if ops is None:
        from ..ops import reference as ops
    t = targets.double()
    x = points.double()
    latent = x.shape[1]
    log_p = -0.5 * (t * t).sum(1) - 0.5 * latent * math.log(2 * math.pi)
    step = max(1, 2_000_000 // max(1, x.shape[0] * latent))
    log_q = torch.cat([ops.kde_log_prob(t[i:i + step], x, float(h)) for i in range(0, t.shape[0], step)])
    return float((log_p - log_q).mean())


def _check_sizes(latent, m, targets, trials) -> None:
    for name, v, lo in (("latent", latent, 1), ("m", m, 2), ("targets", targets, 2), ("trials", trials, 1)):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")


# -- the cache -------------------------------------------------------------------------------------
def cache_path() -> str:
    explicit = os.environ.get("XVAE_FAST_BANDWIDTH_CACHE")
    if explicit:
        return explicit
    root = os.environ.get("XVAE_FAST_CACHE")
    if not root:
        xdg = os.environ.get("XDG_CACHE_HOME")
        root = os.path.join(xdg, "xvae_fast") if xdg else os.path.join(os.path.expanduser("~"), ".cache",
                                                                          "xvae_fast")
    return os.path.join(root, "bandwidth.json")


def cache_key(latent: int, m: int, targets: int, trials: int, seed: int) -> str:
    return f"v{VERSION}:l={latent}:m={m}:targets={targets}:trials={trials}:seed={seed}"


def _valid_entry(e) -> bool:
    if not isinstance(e, dict):
        return False
    h, tr = e.get("h_opt"), e.get("trials")
    return (isinstance(h, (int, float)) and not isinstance(h, bool) and math.isfinite(h) and h > 0
            and isinstance(tr, list) and all(isinstance(v, (int, float)) and math.isfinite(v) and v > 0
                                             for v in tr))


def _read_disk(path: str) -> Dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError, UnicodeDecodeError):
        return {}
    entries = data.get("entries") if isinstance(data, dict) else None
    return {k: v for k, v in entries.items() if _valid_entry(v)} if isinstance(entries, dict) else {}


def _write_disk(path: str, key: str, entry: Dict[str, Any]) -> bool:
    """Merge one entry into the cache file atomically (temporary file + rename); False on any error."""
    try:
        entries = _read_disk(path)
        entries[key] = entry
        with atomic_open(path, "w", prefix=".bandwidth-") as f:
            json.dump({"format": "xvae_fast bandwidth cache", "version": VERSION, "entries": entries},
                      f, indent=1, sort_keys=True)
        return True
    except (OSError, TypeError, ValueError):
        return False


def clear_memory_cache() -> None:
    with _LOCK:
        _MEMORY.clear()


def bandwidth_for(latent: int, m: int, targets: int = TARGETS, trials: int = TRIALS, seed: int = SEED,
                  use_cache: bool = True) -> Bandwidth:
    """h_opt(latent, m) from the in-process cache, the disk cache or the estimator (then cached), and
    the used bandwidth h of Eq. 11."""
    _check_sizes(latent, m, targets, trials)
    key = cache_key(latent, m, targets, trials, seed)
    settings = (("version", VERSION), ("targets", targets), ("trials", trials), ("seed", seed),
                ("method", "sobol targets, newton on log h"))
    entry, source = None, "computed"
    if use_cache:
        with _LOCK:
            entry = _MEMORY.get(key)
        if entry is None:
            entry = _read_disk(cache_path()).get(key)
        if entry is not None:
            source = "cache"
    if entry is None:
        h_opt, values = estimate_h_opt(latent, m, targets, trials, seed)
        entry = {"h_opt": h_opt, "trials": values, "latent": latent, "m": m}
        if use_cache:
            _write_disk(cache_path(), key, entry)
    if use_cache:
        with _LOCK:
            _MEMORY[key] = entry
    h_opt = float(entry["h_opt"])
    return Bandwidth(latent, m, h_opt, scaled_bandwidth(h_opt), source,
                     tuple(float(v) for v in entry["trials"]), settings)


def given_bandwidth(latent: int, m: int, h: float) -> Bandwidth:
    """A used bandwidth set by hand (--avae-bandwidth), with the h_opt it implies by Eq. 11."""
    return Bandwidth(latent, m, unscaled_bandwidth(h), float(h), "flag")
