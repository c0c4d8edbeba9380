"""Vector data from a `.npy` or `.npz` file (e.g. engineering design vectors), shape (N, D)."""
from __future__ import annotations

import os
import zipfile
from typing import Optional

import numpy as np

from ..errors import DataError
from .base import DataBundle, check_finite_array, vector_bundle

NPZ_KEYS = ("x", "X", "data", "arr_0")


# what a .npy file (np.save) and a .npz file (a zip archive, np.savez) start with
NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")


def _check_magic(path: str) -> None:
    """Refuse a file that is neither .npy nor .npz by its first bytes: np.load would try it as a
    pickle and report "pickled (object) data" for, say, a text file named .npy."""
    try:
        with open(path, "rb") as f:
            head = f.read(6)
    except OSError as exc:
        raise DataError(f"could not read array file {path!r}: {exc.strerror or exc}") from exc
    if head.startswith(NPY_MAGIC) or head[:4] in ZIP_MAGICS:
        return
    what = "an empty file" if not head else f"a file starting with {head!r}"
    raise DataError(f"could not read array file {path!r}: it is not a NumPy .npy or .npz file ({what}); "
                    "write the array with np.save (or np.savez), e.g. np.save(path, "
                    "np.loadtxt(text_file, delimiter=','))")


def read_array(path: str, npz_key: Optional[str] = None) -> np.ndarray:
    if not os.path.exists(path):
        raise DataError(f"array file {path!r} does not exist")
    if not path.lower().endswith((".npy", ".npz")):
        raise DataError(f"npy:PATH needs a .npy or .npz file, got {path!r}")
    _check_magic(path)
    try:
        loaded = np.load(path, allow_pickle=False)
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"could not read array file {path!r}: {exc}") from exc
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded:
            keys = list(loaded.keys())
            if npz_key is not None:
                if npz_key not in keys:
                    raise DataError(f"{path!r} has no array {npz_key!r}; it holds {keys}")
                key = npz_key
            elif len(keys) == 1:
                key = keys[0]
            else:
                key = next((k for k in NPZ_KEYS if k in keys), None)
                if key is None:
                    raise DataError(f"{path!r} holds several arrays {keys}; choose one with --npz-key")
            arr = loaded[key]
    else:
        arr = loaded
    return arr


def load_npy(path: str, test_fraction: float, split_seed: int, standardize: bool = True,
             npz_key: Optional[str] = None, limit: Optional[int] = None) -> DataBundle:
    arr = read_array(path, npz_key)
    if arr.dtype.kind not in "fiub":
        raise DataError(f"{path!r} must hold numbers, got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise DataError(f"{path!r} must hold a 2-D array (N examples, D features), got shape "
                        f"{arr.shape}; reshape it to (N, -1) first")
    if arr.shape[0] < 2 or arr.shape[1] < 1:
        raise DataError(f"{path!r} needs at least 2 examples and 1 feature, got shape {arr.shape}")
    if arr.dtype.kind == "f":
        check_finite_array(arr, f"array {path!r}")
        # the models train in float32: larger values would become inf there, not NaN or inf here
        big, f32_max = max(-float(arr.min()), float(arr.max())), float(np.finfo(np.float32).max)
        if big > f32_max:
            raise DataError(f"array {path!r} holds values up to {big:.3g} in magnitude, beyond float32's "
                            f"range ({f32_max:.3g}) in which the models train; rescale the data (e.g. to "
                            "unit scale) first")
    arr = arr.astype(np.float32)
    check_finite_array(arr, f"array {path!r}")
    return vector_bundle(f"npy:{path}", arr, test_fraction, split_seed, standardize, limit=limit)
