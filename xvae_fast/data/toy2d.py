"""The 2-D benchmark of paper 001 (IntroPrior, SPEC-related 1.3): 8gaussians, 2spirals, checkerboard and
rings, drawn as the authors' `ToyDataset` draws them (athaioan/intro_prior, 2D/dataset/dataset.py:
`ToyDataset.next_batch` for 8Gaussians, `sample_2d_data` - the bnaf-style samplers - for the other
three). Re-derived in numpy; the constants are theirs.

The authors draw a fresh batch every iteration. The library keeps a fixed, seeded sample instead, so
epochs, --resume and the train/test split work as for every other dataset: TOY2D_SIZE = 25,600 points,
of which the default 20% test split leaves 20,480 = 40 batches of 512 (the paper's batch) per epoch,
so the paper's 30,000 iterations are exactly 750 epochs. 20,480 training points of a 2-D density are
plenty for a 3 x 256 MLP (the histogram metric itself uses 5,000 points).

The evaluation's real points are fresh draws from the same samplers (`reference_points`), as the
authors' `calculate_sample_kl` draws them, from a random stream that never coincides with the
training sample's."""
from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple, Union

import numpy as np

from ..errors import ConfigError
from .base import DataBundle, vector_bundle
from .spec import TOY2D_KINDS

TOY2D_SIZE = 25_600
# Histogram half-width parameter r of the metric's window [-2r, 2r]^2: the authors' grid scale
# (`ToyDataset.scale`), 1 for 8Gaussians and 2 otherwise (SPEC-related 1.6: fixed by name here).
HIST_RANGE = {"8gaussians": 1.0, "2spirals": 2.0, "checkerboard": 2.0, "rings": 2.0}
# Separate random streams: the training sample is stream 0 of --split-seed, the evaluation's fresh
# reference points stream 1 of their seed, so they are independent whatever the two seeds are.
TRAIN_STREAM, REFERENCE_STREAM = 0, 1

# 8Gaussians: centres 2 * (the authors' 8 unit-circle points, in their order), isotropic noise of
# std 0.02, everything divided by 1.414 (their "stdev" normaliser, not sqrt(2) exactly).
_S = 1.0 / math.sqrt(2.0)
_UNIT8 = np.array([(1, 0), (-1, 0), (0, 1), (0, -1), (_S, _S), (_S, -_S), (-_S, _S), (-_S, -_S)])
GAUSS8_SCALE, GAUSS8_NOISE, GAUSS8_DIVISOR = 2.0, 0.02, 1.414
GAUSS8_CENTRES = GAUSS8_SCALE * _UNIT8 / GAUSS8_DIVISOR      # radius 2 / 1.414 = 1.41443
GAUSS8_STD = GAUSS8_NOISE / GAUSS8_DIVISOR                   # 0.014144
# 2spirals: angle sqrt(U) * 540 degrees, uniform [0, 0.5) jitter per coordinate, the second arm the
# point reflection of the first, all / 3, then Gaussian noise of std 0.1.
SPIRAL_TURN_DEG, SPIRAL_JITTER, SPIRAL_DIVISOR, SPIRAL_NOISE = 540.0, 0.5, 3.0, 0.1
# checkerboard: x1 ~ U[-2, 2), x2 in the unit squares of alternating parity, all * 2 -> [-4, 4)^2.
CHECKER_SCALE = 2.0
# rings: four circles of radii 1, .75, .5, .25 (* 3), equispaced angles, resampled with
# replacement, Gaussian noise of std 0.08. (The radii minus 0.15 and the spirals rotated by pi/2 are
# the authors' out-of-distribution samplers `sample_2d_ood`, not the training data.)
RING_RADII, RING_SCALE, RING_NOISE = (1.0, 0.75, 0.5, 0.25), 3.0, 0.08

SeedLike = Union[int, Sequence[int], np.random.Generator]


def _rng(seed: SeedLike) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def _gaussians8(n: int, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    labels = rng.integers(0, len(_UNIT8), n)              # the mode, uniformly per point
    x = (GAUSS8_SCALE * _UNIT8[labels] + rng.standard_normal((n, 2)) * GAUSS8_NOISE) / GAUSS8_DIVISOR
    return x, labels


def _spirals(n: int, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    m = (n + 1) // 2                                      # points of the first arm
    t = np.sqrt(rng.random(m)) * SPIRAL_TURN_DEG * (2 * np.pi) / 360
    arm = np.stack([-np.cos(t) * t + rng.random(m) * SPIRAL_JITTER,
                    np.sin(t) * t + rng.random(m) * SPIRAL_JITTER], axis=1)
    x = np.concatenate([arm, -arm])[:n] / SPIRAL_DIVISOR
    labels = np.concatenate([np.zeros(m, np.int64), np.ones(m, np.int64)])[:n]   # the arm
    return x + SPIRAL_NOISE * rng.standard_normal((n, 2)), labels


def _checkerboard(n: int, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    x1 = rng.random(n) * 4 - 2
    x2 = rng.random(n) - rng.integers(0, 2, n) * 2.0 + np.mod(np.floor(x1), 2)
    labels = (np.floor(x1).astype(np.int64) + 2) * 2 + (x2 <= 0)   # which of the 8 squares
    return np.stack([x1, x2], axis=1) * CHECKER_SCALE, labels


def _rings(n: int, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    sizes = [n // 4] * 3 + [n - 3 * (n // 4)]             # outer to inner, the remainder innermost
    pts, labels = [], []
    for i, (r, k) in enumerate(zip(RING_RADII, sizes)):
        a = np.linspace(0, 2 * np.pi, k + 1)[:-1]          # k equispaced angles, no repeated end
        pts.append(np.stack([np.cos(a), np.sin(a)], axis=1) * r)
        labels.append(np.full(k, i, np.int64))
    x, labels = np.concatenate(pts) * RING_SCALE, np.concatenate(labels)
    idx = rng.integers(0, n, n)                            # resampled with replacement
    return x[idx] + rng.normal(0.0, RING_NOISE, (n, 2)), labels[idx]


_SAMPLERS = {"8gaussians": _gaussians8, "2spirals": _spirals, "checkerboard": _checkerboard,
             "rings": _rings}


def check_kind(name: str) -> str:
    if name not in _SAMPLERS:
        raise ConfigError(f"unknown 2-D dataset {name!r}; choose one of {', '.join(TOY2D_KINDS)}")
    return name


def make_toy2d(name: str, n: int, seed: SeedLike = 0) -> Tuple[np.ndarray, np.ndarray]:
    """(x (n, 2) float32, labels (n,) int64) drawn from the 2-D dataset `name`. Labels: the mode
    (8gaussians, 0-7 in the authors' centre order), the arm (2spirals), the square (checkerboard,
    0-7), the ring (rings, 0 outermost)."""
    check_kind(name)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ConfigError(f"the number of points must be a positive integer, got {n!r}")
    x, labels = _SAMPLERS[name](int(n), _rng(seed))
    return x.astype(np.float32), labels.astype(np.int64)


def reference_points(name: str, n: int, seed: int = 0) -> np.ndarray:
    """n fresh points for the evaluation (the authors' real histogram side), independent of every
    training sample."""
    return make_toy2d(name, n, [REFERENCE_STREAM, int(seed)])[0]


def toy2d_extra(name: str) -> dict:
    """DataInfo.extra of a 2-D dataset: what the histogram metrics need without the data (its name
    and range r) and, for 8gaussians, the modes for the coverage counts."""
    extra = {"toy2d": {"name": name, "range": HIST_RANGE[name]}}
    if name == "8gaussians":
        extra["toy2d"]["modes"] = {"centres": GAUSS8_CENTRES.tolist(), "std": GAUSS8_STD}
    return extra


def load_toy2d(name: str, test_fraction: float, split_seed: int, standardize: bool = False,
               limit: Optional[int] = None) -> DataBundle:
    """The fixed TOY2D_SIZE-point sample of `name` (seeded by --split-seed), split like every vector
    dataset; not standardised by default (DEFAULTS), and the metrics map samples back to data units."""
    x, labels = make_toy2d(name, TOY2D_SIZE, [TRAIN_STREAM, int(split_seed)])
    return vector_bundle(name, x, test_fraction, split_seed, standardize, toy2d_extra(name), limit,
                         labels=labels)
