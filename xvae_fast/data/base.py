"""The one interface every dataset implements, and the seeded train/test split.

A dataset is an `XDataset`: `len(ds)`, `ds[i]` and `ds.get_batch(indices)` give float32 tensors of
`info.shape` in *model space* (images in [0, 1], vectors standardised by the training split's
per-feature mean and std when `standardize` is on). `DataInfo` carries what is needed to map model
outputs back to data space and is stored in every checkpoint, so sampling needs no data.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..errors import DataError


@dataclasses.dataclass
class DataInfo:
    name: str                      # the dataset spec, e.g. "digits" or "mnist:/data/mnist"
    kind: str                      # "image" or "vector"
    shape: Tuple[int, ...]         # one example: (C, H, W) or (D,)
    mean: Optional[torch.Tensor] = None   # vector standardisation: data = model * std + mean
    std: Optional[torch.Tensor] = None
    extra: Dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_data_space(self, x: torch.Tensor) -> torch.Tensor:
        """Model outputs back to data units (undo standardisation; clamp images to [0, 1])."""
        x = x.detach().float().cpu()
        if self.kind == "image":
            return x.clamp(0.0, 1.0)
        if self.mean is not None:
            x = x * self.std + self.mean
        return x

    def to_model_space(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.as_tensor(x, dtype=torch.float32)
        if self.kind == "vector" and self.mean is not None:
            x = (x - self.mean) / self.std
        return x

    def to_dict(self) -> Dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "shape": list(self.shape),
                "mean": self.mean, "std": self.std, "extra": self.extra}

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "DataInfo":
        return cls(d["name"], d["kind"], tuple(int(s) for s in d["shape"]), d.get("mean"),
                   d.get("std"), dict(d.get("extra") or {}))


class XDataset(torch.utils.data.Dataset):
    """A map-style dataset of float32 tensors; subclasses implement __len__ and __getitem__ and may
    override get_batch with something faster."""

    def get_batch(self, indices: Sequence[int]) -> torch.Tensor:
        return torch.stack([self[int(i)] for i in indices])

    @property
    def in_memory(self) -> bool:
        return False


class TensorData(XDataset):
    """Examples held in one tensor (float32, or uint8 pixels scaled by 1/255 on access)."""

    def __init__(self, tensor: torch.Tensor):
        if tensor.dtype not in (torch.float32, torch.uint8):
            tensor = tensor.float()
        self.tensor = tensor

    def __len__(self) -> int:
        return self.tensor.shape[0]

    def _convert(self, t: torch.Tensor) -> torch.Tensor:
        return t.float().div_(255.0) if t.dtype == torch.uint8 else t

    def __getitem__(self, i: int) -> torch.Tensor:
        return self._convert(self.tensor[i])

    def get_batch(self, indices) -> torch.Tensor:
        idx = torch.as_tensor(indices, dtype=torch.long)
        return self._convert(self.tensor.index_select(0, idx))

    @property
    def in_memory(self) -> bool:
        return True


class SubsetData(XDataset):
    """A view of another dataset through an index list."""

    def __init__(self, base: XDataset, indices: Sequence[int]):
        self.base = base
        self.indices = np.asarray(indices, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.base[int(self.indices[i])]

    def get_batch(self, indices) -> torch.Tensor:
        return self.base.get_batch(self.indices[np.asarray(indices, dtype=np.int64)])


@dataclasses.dataclass
class DataBundle:
    train: XDataset
    test: XDataset
    info: DataInfo
    # integer class labels (int64, aligned with train / test) where the dataset has them (digits,
    # clusters, MNIST with its label files); None otherwise. Training never reads them; evaluation
    # uses them to train its offline feature classifier (xvae_fast.evaluation).
    train_labels: Optional[torch.Tensor] = None
    test_labels: Optional[torch.Tensor] = None

    @property
    def has_labels(self) -> bool:
        return self.train_labels is not None and self.test_labels is not None


def split_indices(n: int, test_fraction: float, seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """A fixed train/test split of range(n): a seeded permutation, the first ceil(n*f) for test."""
    if n < 2:
        raise DataError(f"need at least 2 examples to split into train and test, got {n}")
    n_test = min(max(1, int(np.ceil(n * test_fraction))), n - 1)
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


def split_tensor(x: torch.Tensor, test_fraction: float, seed: int):
    tr, te = split_indices(x.shape[0], test_fraction, seed)
    return x[torch.as_tensor(tr)], x[torch.as_tensor(te)]


def as_labels(labels, n: int, what: str) -> Optional[torch.Tensor]:
    """Class labels as an int64 tensor of length n (None stays None)."""
    if labels is None:
        return None
    t = torch.as_tensor(np.asarray(labels)).reshape(-1)
    if t.shape[0] != n:
        raise DataError(f"{what}: {t.shape[0]} labels for {n} examples")
    return t.long()


# A feature whose spread is below this fraction of its magnitude is constant (float32 resolves ~6e-8)
CONSTANT_REL = 1e-6
# training data whose every feature spreads less than this (model units) is as good as constant
MIN_SPREAD = 1e-6


def standardize(train: torch.Tensor, test: torch.Tensor):
    """Per-feature z-scores with the training split's statistics; returns (train, test, mean, std).
    A constant feature (std below CONSTANT_REL of its magnitude) keeps std 1; the test is relative,
    so data on any scale (std 1e-30 included) is standardised."""
    mean = train.mean(dim=0)
    std = train.std(dim=0, unbiased=False)
    std = torch.where(std > CONSTANT_REL * train.abs().amax(dim=0), std, torch.ones_like(std))
    return (train - mean) / std, (test - mean) / std, mean, std


def check_variation(x: torch.Tensor, what: str, hint: str = "") -> None:
    """Refuse training data that is constant: every feature spreads (max - min) less than CONSTANT_REL
    of its magnitude, or less than MIN_SPREAD in model units. Such data trains to the end with a
    degenerate prior fit (a KL of ~1e8) instead of failing."""
    lo = hi = None
    for s in range(0, x.shape[0], 4096):       # chunks: no float copy of a large uint8 image set
        c = x[s:s + 4096].reshape(min(4096, x.shape[0] - s), -1)
        lo = c.amin(0) if lo is None else torch.minimum(lo, c.amin(0))
        hi = c.amax(0) if hi is None else torch.maximum(hi, c.amax(0))
    if lo is None:
        return
    lo, hi = lo.double(), hi.double()
    if x.dtype == torch.uint8:
        lo, hi = lo / 255.0, hi / 255.0
    spread = hi - lo
    if bool((spread <= CONSTANT_REL * torch.maximum(lo.abs(), hi.abs())).all()):
        raise DataError(f"{what} is constant: every feature takes a single value over the "
                        f"{x.shape[0]} training rows, so there is nothing to learn{hint}")
    if float(spread.max()) < MIN_SPREAD:
        raise DataError(f"{what} varies by at most {float(spread.max()):.3g} in any feature over the "
                        f"{x.shape[0]} training rows: too little for the models to learn (they would fit "
                        f"a degenerate prior){hint}; rescale the data")


def check_finite_array(x: np.ndarray, what: str) -> None:
    if not np.isfinite(x).all():
        bad = np.argwhere(~np.isfinite(x))[0]
        raise DataError(f"{what} contains NaN or inf (first at index {tuple(int(b) for b in bad)})")


def vector_bundle(name: str, x: np.ndarray, test_fraction: float, split_seed: int,
                  do_standardize: bool, extra: Optional[dict] = None,
                  limit: Optional[int] = None, labels=None) -> DataBundle:
    """A DataBundle of 2-D vector data (N, D), split by seed and optionally standardised; `labels`
    (N,) are split with the data when given."""
    x = np.asarray(x)
    y = as_labels(labels, x.shape[0], name)
    if limit is not None:
        x = x[:limit]
        y = y[:limit] if y is not None else None
    t = torch.as_tensor(np.ascontiguousarray(x), dtype=torch.float32)
    train, test = split_tensor(t, test_fraction, split_seed)
    mean = std = None
    if do_standardize:
        train, test, mean, std = standardize(train, test)
    check_variation(train, f"the training data of {name}",
                    "" if do_standardize else " (it is not standardised: --standardize rescales it)")
    info = DataInfo(name, "vector", (t.shape[1],), mean, std, dict(extra or {}))
    y_tr, y_te = split_tensor(y, test_fraction, split_seed) if y is not None else (None, None)
    return DataBundle(TensorData(train), TensorData(test), info, y_tr, y_te)


def image_bundle(name: str, x: torch.Tensor, test_fraction: float, split_seed: int,
                 extra: Optional[dict] = None, test: Optional[torch.Tensor] = None,
                 labels=None, test_labels=None) -> DataBundle:
    """A DataBundle of in-memory images (N, C, H, W), uint8 or float in [0, 1]. `labels` (N,) are
    split with the images; with an explicit `test` set, `test_labels` go with it."""
    y = as_labels(labels, x.shape[0], name)
    if test is None:
        train, test = split_tensor(x, test_fraction, split_seed)
        y_tr, y_te = split_tensor(y, test_fraction, split_seed) if y is not None else (None, None)
    else:
        train = x
        y_tr, y_te = y, as_labels(test_labels, test.shape[0], name)
        if y_tr is None or y_te is None:
            y_tr = y_te = None
    check_variation(train, f"the training images of {name}")
    info = DataInfo(name, "image", tuple(int(s) for s in x.shape[1:]), extra=dict(extra or {}))
    return DataBundle(TensorData(train), TensorData(test), info, y_tr, y_te)


def describe(bundle: DataBundle) -> str:
    i = bundle.info
    return (f"{i.name}: {len(bundle.train)} train / {len(bundle.test)} test, {i.kind} "
            f"{'x'.join(str(s) for s in i.shape)}")


__all__: List[str] = ["DataInfo", "XDataset", "TensorData", "SubsetData", "DataBundle",
                      "split_indices", "standardize", "vector_bundle", "image_bundle", "describe"]
