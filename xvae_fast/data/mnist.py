"""MNIST from the standard IDX files in a folder (gzipped or not), with an optional download."""
from __future__ import annotations

import gzip
import os
import struct
import warnings
from typing import Optional

import numpy as np
import torch

from ..atomic_file import atomic_path
from ..errors import DataError
from .base import DataBundle, image_bundle

FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/",
           "https://storage.googleapis.com/cvdf-datasets/mnist/")
IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str) -> np.ndarray:
    """An IDX file (optionally .gz) as a numpy array; errors name the file and what is wrong."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"could not read IDX file {path!r}: {exc}") from exc
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in IDX_DTYPES:
        raise DataError(f"{path!r} is not an IDX file (bad magic number)")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"IDX file {path!r} is truncated (header)")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    dtype = np.dtype(IDX_DTYPES[data[2]])
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(data) - header != expected:
        raise DataError(f"IDX file {path!r} has {len(data) - header} data bytes but its header "
                        f"{dims} needs {expected}; the file is truncated or corrupt")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)


def find_file(folder: str, stem: str) -> Optional[str]:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        p = os.path.join(folder, name)
        if os.path.isfile(p):
            return p
    return None


def download_mnist(folder: str) -> None:
    """Fetch the four gzipped IDX files into `folder` (needs internet)."""
    import urllib.request
    os.makedirs(folder, exist_ok=True)
    for stem in FILES.values():
        if find_file(folder, stem):
            continue
        target = os.path.join(folder, stem + ".gz")
        errors = []
        for mirror in MIRRORS:
            try:
                with atomic_path(target) as tmp:
                    urllib.request.urlretrieve(mirror + stem + ".gz", tmp)
                break
            except Exception as exc:  # network errors of every kind
                errors.append(f"{mirror}: {exc}")
        else:
            raise DataError(f"could not download MNIST file {stem}.gz (offline?): " + "; ".join(errors))


def _images(path: str) -> np.ndarray:
    x = read_idx(path)
    if x.ndim != 3:
        raise DataError(f"MNIST image file {path!r} must hold (N, 28, 28) images, got shape {x.shape}")
    if x.shape[1:] != (28, 28):
        raise DataError(f"MNIST images must be 28x28, but {path!r} holds {x.shape[1]}x{x.shape[2]} "
                        "images; use images:DIR for other image sizes")
    if x.dtype != np.uint8:
        raise DataError(f"MNIST image file {path!r} must hold unsigned bytes, got {x.dtype}")
    return x


def _labels(folder: str, stem: str, n: int) -> Optional[np.ndarray]:
    """The labels of an image file when its IDX label file is there and matches (N,) uint8 0..9;
    otherwise None with a warning (training does not need labels; evaluation reports their absence)."""
    path = find_file(folder, stem)
    if path is None:
        return None
    try:
        y = read_idx(path)
    except DataError as exc:
        warnings.warn(f"ignoring MNIST labels: {exc}")
        return None
    if y.ndim != 1 or y.shape[0] != n or y.dtype != np.uint8 or (y.size and y.max() > 9):
        warnings.warn(f"ignoring MNIST labels {path!r}: expected {n} labels 0..9, got shape "
                      f"{y.shape} ({y.dtype})")
        return None
    return y.astype(np.int64)


def load_mnist(folder: str, test_fraction: float, split_seed: int, download: bool = False,
               limit: Optional[int] = None) -> DataBundle:
    """The official 60k/10k split when the t10k files are there; otherwise the training file is split
    by seed. Pixels scaled to [0, 1]. The label files are read when present (the bundle's
    train_labels / test_labels, for evaluation); training does not use them."""
    if not os.path.isdir(folder) or find_file(folder, FILES["train_images"]) is None:
        if download:
            download_mnist(folder)
        elif not os.path.isdir(folder):
            raise DataError(f"MNIST folder {folder!r} does not exist; put the IDX files "
                            f"({FILES['train_images']}[.gz], ...) there or pass --download")
    train_path = find_file(folder, FILES["train_images"])
    if train_path is None:
        raise DataError(f"MNIST folder {folder!r} has no {FILES['train_images']}[.gz]; pass "
                        "--download to fetch it")
    train = _images(train_path)
    y_train = _labels(folder, FILES["train_labels"], train.shape[0])
    test_path = find_file(folder, FILES["test_images"])
    if test_path is not None:
        test = _images(test_path)
        y_test = _labels(folder, FILES["test_labels"], test.shape[0])
        if limit is not None:
            train = train[:limit]
            test = test[:max(1, int(np.ceil(limit * test_fraction)))]
            y_train = y_train[:len(train)] if y_train is not None else None
            y_test = y_test[:len(test)] if y_test is not None else None
        return image_bundle(f"mnist:{folder}", torch.from_numpy(train.copy())[:, None], test_fraction,
                            split_seed, test=torch.from_numpy(test.copy())[:, None],
                            labels=y_train, test_labels=y_test)
    if limit is not None:
        train = train[:limit]
        y_train = y_train[:limit] if y_train is not None else None
    return image_bundle(f"mnist:{folder}", torch.from_numpy(train.copy())[:, None], test_fraction,
                        split_seed, labels=y_train)
