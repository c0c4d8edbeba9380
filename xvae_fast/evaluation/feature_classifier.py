"""The offline feature network: a small classifier trained on the dataset's training labels, whose
penultimate layer gives the features of the offline Fréchet distance ("FD-LeNet").

This is the LeNet-feature FID used for MNIST in the literature, not Inception FID: its numbers are
on another scale and must not be compared with Inception FIDs (the paper's tables). It needs no
download, so it is what evaluation reports by default on the bundled data.

- Images: a LeNet-style CNN (two 3x3 conv + max-pool stages, 32 and 64 channels, then 128 -> 64
  fully connected); vectors: an MLP (64 -> 32). The features are the last hidden layer *before* its
  ReLU, so no unit is dead and their covariance has full rank.
- Training is deterministic given the seed (fixed initialisation and batch order, Adam 1e-3,
  batch 64, 1,000-4,000 steps), on the training split only; the test accuracy is reported.
- Trained networks are cached on disk (default `~/.cache/xvae_fast/feature_classifiers`, or
  `$XVAE_FAST_CACHE/feature_classifiers`), keyed by a hash of the training and test data, their
  labels and the recipe, so every evaluation of the same dataset and split uses the same network and
  their numbers are comparable.
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import re
import warnings
from typing import Any, Dict, Optional

import numpy as np
import torch
from torch import nn

from ..atomic_file import atomic_open
from ..errors import DataError, DiskFullError

RECIPE_VERSION = 1
FEATURE_DIMS = {"lenet": 64, "mlp": 32}
DESCRIPTIONS = {
    "lenet": "Fréchet distance in the features of a LeNet-style classifier trained on the dataset's "
             "labels (offline; not Inception FID, not comparable with it)",
    "mlp": "Fréchet distance in the features of an MLP classifier trained on the dataset's labels "
           "(offline; not Inception FID, not comparable with it)",
}


# inputs this small train on one thread (see train_classifier)
ONE_THREAD_VALUES = 256


@dataclasses.dataclass(frozen=True)
class Recipe:
    seed: int = 0
    batch_size: int = 64
    lr: float = 1e-3
    min_steps: int = 1000
    max_steps: int = 4000
    epochs: int = 3            # steps = epochs over the training set, clamped to [min, max]

    def steps(self, n_train: int) -> int:
        return int(min(self.max_steps, max(self.min_steps, self.epochs * math.ceil(n_train / self.batch_size))))


class LeNetFeatures(nn.Module):
    """LeNet-style CNN for (C, H, W) images in [0, 1]."""

    arch = "lenet"

    def __init__(self, shape, n_classes: int):
        super().__init__()
        c, h, w = shape
        side = max(1, min(4, h // 4, w // 4))
        self.conv = nn.Sequential(
            nn.Conv2d(c, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(side), nn.Flatten())
        self.fc = nn.Sequential(nn.Linear(64 * side * side, 128), nn.ReLU(),
                                nn.Linear(128, FEATURE_DIMS["lenet"]))
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(FEATURE_DIMS["lenet"], n_classes))

    def features(self, x):
        return self.fc(self.conv(x))

    def forward(self, x):
        return self.head(self.features(x))


class MLPFeatures(nn.Module):
    """MLP for (D,) vectors (model space, i.e. standardised when the run standardises)."""

    arch = "mlp"

    def __init__(self, shape, n_classes: int):
        super().__init__()
        d = int(np.prod(shape))
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(d, 64), nn.ReLU(), nn.Linear(64, FEATURE_DIMS["mlp"]))
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(FEATURE_DIMS["mlp"], n_classes))

    def features(self, x):
        return self.fc(x)

    def forward(self, x):
        return self.head(self.features(x))


def build_classifier(kind: str, shape, n_classes: int) -> nn.Module:
    return LeNetFeatures(shape, n_classes) if kind == "image" else MLPFeatures(shape, n_classes)


def default_cache_dir() -> str:
    root = os.environ.get("XVAE_FAST_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "xvae_fast")
    return os.path.join(root, "feature_classifiers")


def _digest(*tensors: torch.Tensor, extra: str = "") -> str:
    h = hashlib.sha256(extra.encode())
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(str((tuple(t.shape), str(t.dtype))).encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def _state_digest(model: nn.Module) -> str:
    return _digest(*[v for _, v in sorted(model.state_dict().items())])[:16]


@torch.no_grad()
def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 512) -> float:
    correct = 0
    for s in range(0, x.shape[0], batch):
        correct += int((model(x[s:s + batch]).argmax(1) == y[s:s + batch]).sum())
    return correct / max(1, x.shape[0])


@dataclasses.dataclass
class FeatureClassifier:
    model: nn.Module
    meta: Dict[str, Any]

    @property
    def name(self) -> str:
        return self.meta["arch"]

    @property
    def metric(self) -> str:
        return f"fd_{self.meta['arch']}"

    @property
    def description(self) -> str:
        return DESCRIPTIONS[self.meta["arch"]]

    @torch.no_grad()
    def features(self, x: torch.Tensor, batch_size: int = 500) -> np.ndarray:
        """(N, feature dims) float64 features of examples in model space."""
        self.model.eval()
        out = [self.model.features(x[s:s + batch_size].float()).double()
               for s in range(0, x.shape[0], batch_size)]
        return torch.cat(out).numpy()


def train_classifier(kind: str, shape, x_train, y_train, x_test, y_test, recipe: Recipe = Recipe(),
                     progress: bool = False) -> FeatureClassifier:
    """Train the feature classifier deterministically (the global RNG is left untouched). Tiny
    inputs (at most ONE_THREAD_VALUES per example: the 8x8 digits, the 2-D sets) train on one CPU
    thread, which is faster for those nets and immune to oversubscription; larger ones use the
    caller's threads (MNIST's LeNet: 2 threads take 0.6x the time of one on the 2-core CPU)."""
    threads = torch.get_num_threads()
    if int(np.prod(shape)) <= ONE_THREAD_VALUES:
        torch.set_num_threads(1)
    try:
        return _train(kind, shape, x_train, y_train, x_test, y_test, recipe, progress)
    finally:
        torch.set_num_threads(threads)


def _train(kind, shape, x_train, y_train, x_test, y_test, recipe, progress) -> FeatureClassifier:
    n_classes = int(max(int(y_train.max()), int(y_test.max()))) + 1
    steps = recipe.steps(x_train.shape[0])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed)
        model = build_classifier(kind, shape, n_classes)
    order = torch.Generator().manual_seed(recipe.seed + 1)
    opt = torch.optim.Adam(model.parameters(), lr=recipe.lr)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    it = range(steps)
    if progress:
        from ..progress import progress_bar
        it = progress_bar(it, desc=f"training the {model.arch} feature classifier", unit="step")
    n = x_train.shape[0]
    perm, pos = torch.randperm(n, generator=order), 0
    for _ in it:
        if pos + recipe.batch_size > n:
            perm, pos = torch.randperm(n, generator=order), 0
        idx = perm[pos:pos + recipe.batch_size]
        pos += recipe.batch_size
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x_train[idx]), y_train[idx])
        loss.backward()
        opt.step()
    model.eval()
    meta = {"arch": model.arch, "feature_dims": FEATURE_DIMS[model.arch], "classes": n_classes,
            "steps": steps, "recipe": dataclasses.asdict(recipe), "recipe_version": RECIPE_VERSION,
            "n_train": int(n), "n_test": int(x_test.shape[0]),
            "train_accuracy": _accuracy(model, x_train, y_train),
            "test_accuracy": _accuracy(model, x_test, y_test)}
    meta["weights_sha256_16"] = _state_digest(model)
    return FeatureClassifier(model, meta)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:40].strip("_") or "data"


def get_classifier(bundle, cache_dir: Optional[str] = None, recipe: Recipe = Recipe(),
                   progress: bool = False, log=None) -> FeatureClassifier:
    """The feature classifier of a labelled DataBundle: from the cache, or trained and cached."""
    info = bundle.info
    if not getattr(bundle, "has_labels", False):
        raise DataError(f"dataset {info.name!r} has no labels, so the offline feature classifier "
                        "cannot be trained")
    x_train = bundle.train.get_batch(torch.arange(len(bundle.train))).float()
    x_test = bundle.test.get_batch(torch.arange(len(bundle.test))).float()
    y_train, y_test = bundle.train_labels.long(), bundle.test_labels.long()
    if y_train.min() < 0 or y_test.min() < 0:
        raise DataError(f"dataset {info.name!r}: class labels must be non-negative integers")
    key = _digest(x_train, y_train, x_test, y_test,
                  extra=f"{info.kind}|{tuple(info.shape)}|{RECIPE_VERSION}|{dataclasses.asdict(recipe)}")
    arch = "lenet" if info.kind == "image" else "mlp"
    cache_dir = cache_dir or default_cache_dir()
    path = os.path.join(cache_dir, f"{_safe(info.name)}-{arch}-{key[:20]}.pt")
    if os.path.isfile(path):
        try:
            ck = torch.load(path, map_location="cpu", weights_only=True)
            model = build_classifier(info.kind, info.shape, int(ck["meta"]["classes"]))
            model.load_state_dict(ck["state_dict"])
            model.eval()
            meta = dict(ck["meta"], cache_file=path, cached=True)
            return FeatureClassifier(model, meta)
        except Exception as exc:  # corrupt or stale cache file: retrain and overwrite it
            warnings.warn(f"ignoring unreadable feature-classifier cache {path!r} ({exc}); retraining")
    if log is not None:
        log(f"training the {arch} feature classifier on {len(y_train)} labelled {info.name} examples "
            f"(cached in {cache_dir})")
    fc = train_classifier(info.kind, info.shape, x_train, y_train, x_test, y_test, recipe, progress)
    try:
        with atomic_open(path, "wb") as f:
            torch.save({"state_dict": fc.model.state_dict(), "meta": fc.meta}, f)
        fc.meta.update(cache_file=path, cached=False)
    except (OSError, DiskFullError) as exc:      # a cache that cannot be written: retrain next time
        warnings.warn(f"could not cache the feature classifier in {cache_dir!r}: {exc}")
        fc.meta.update(cache_file=None, cached=False)
    return fc


def data_space_features(x: torch.Tensor) -> np.ndarray:
    """The fallback feature map for unlabelled vector data: the (model-space) vectors themselves."""
    return x.reshape(x.shape[0], -1).double().numpy()
