"""Image folders: CelebA (aligned faces) and any folder of images, centre-cropped to a square and
resized. Small folders are decoded once into memory (uint8); large ones are read lazily. 16-bit
greyscale images are reduced to 8 bits by their high byte (as Pillow reads 16-bit RGB)."""
from __future__ import annotations

import os
from typing import List, Optional

import numpy as np
import torch

from ..errors import DataError
from .base import DataBundle, DataInfo, SubsetData, XDataset, image_bundle, split_indices

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
PRELOAD_BYTES = 4 << 30
CELEBA_CROP = 148  # the usual centre crop of the 178x218 aligned CelebA faces before resizing


def list_images(folder: str) -> List[str]:
    """Image files under folder (recursively), sorted, so the split is the same on every machine."""
    if not os.path.isdir(folder):
        raise DataError(f"image folder {folder!r} does not exist")
    files = []
    for root, dirs, names in os.walk(folder):
        dirs.sort()
        files.extend(os.path.join(root, n) for n in sorted(names) if n.lower().endswith(IMAGE_EXTS))
    if not files:
        raise DataError(f"image folder {folder!r} holds no images ({', '.join(IMAGE_EXTS)})")
    return sorted(files)


def load_image(path: str, size: int, channels: int, crop: Optional[int] = None) -> np.ndarray:
    """(channels, size, size) uint8: centre square crop (side `crop`, or the shorter side), resize."""
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(path) as im:
            im.load()
            im = _to_8bit(im, path)
            w, h = im.size
            short = min(w, h)
            if short < size:
                raise DataError(f"image {path!r} is {w}x{h}, smaller than the {size}x{size} input the "
                                f"model takes; pass a smaller --image-size (e.g. {_fit(short)}) or "
                                "remove the image")
            side = short if crop is None else max(size, min(crop, short))
            left, top = (w - side) // 2, (h - side) // 2
            im = im.crop((left, top, left + side, top + side)).convert("L" if channels == 1 else "RGB")
            if side != size:
                im = im.resize((size, size), Image.Resampling.LANCZOS)
            arr = np.asarray(im, dtype=np.uint8)
    except DataError:
        raise
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as exc:
        raise DataError(f"could not read image {path!r}: {exc}") from exc
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1).copy()


def _to_8bit(im, path: str):
    """A 16-bit greyscale image (Pillow's I;16 modes; mode I in Pillow < 10, or a 32-bit image whose
    values are 16-bit) as 8-bit L by its high byte, as Pillow itself reads 16-bit RGB: Pillow's own
    conversion to L or RGB clips every value above 255, which turns such an image white. 32-bit
    integer values beyond 16 bits and floating-point pixels have no defined range: refused."""
    from PIL import Image
    if im.mode.startswith("I;16") or im.mode == "I":
        a = np.asarray(im)
        lo, hi = int(a.min()), int(a.max())
        if lo < 0 or hi > 65535:
            raise DataError(f"image {path!r} holds 32-bit integer pixels ({lo} to {hi}) beyond the 16-bit "
                            "range, whose scale is not defined; convert it to an 8- or 16-bit image")
        return Image.fromarray((a.astype(np.uint32) >> 8).astype(np.uint8))
    if im.mode == "F":
        raise DataError(f"image {path!r} holds 32-bit floating-point pixels (mode F), whose scale is not "
                        "defined; convert it to an 8- or 16-bit image")
    return im


def _fit(short: int) -> int:
    from .spec import image_size_supported
    return max([s for s in range(8, short + 1) if image_size_supported(s)], default=8)


class ImageFolderData(XDataset):
    """Lazily decoded images (for folders too large to hold in memory)."""

    def __init__(self, files: List[str], size: int, channels: int, crop: Optional[int]):
        self.files, self.size, self.channels, self.crop = files, size, channels, crop

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> torch.Tensor:
        arr = load_image(self.files[i], self.size, self.channels, self.crop)
        return torch.from_numpy(arr).float().div_(255.0)


def _load_all(files, size, channels, crop, num_workers, progress) -> np.ndarray:
    from functools import partial
    fn = partial(load_image, size=size, channels=channels, crop=crop)
    if num_workers > 0 and len(files) > 256:
        import multiprocessing as mp
        with mp.get_context("spawn").Pool(num_workers) as pool:
            arrays = pool.map(fn, files, chunksize=64)
    else:
        it = files
        if progress and len(files) > 2000:
            from ..progress import progress_bar
            it = progress_bar(files, desc="decoding images", unit="img")
        arrays = [fn(f) for f in it]
    return np.stack(arrays)


def load_image_folder(folder: str, name: str, size: int, channels: int, test_fraction: float,
                      split_seed: int, crop: Optional[int] = None, limit: Optional[int] = None,
                      num_workers: int = 0, progress: bool = False,
                      preload_bytes: int = PRELOAD_BYTES) -> DataBundle:
    files = list_images(folder)
    if limit is not None:
        files = files[:limit]
    if len(files) * channels * size * size <= preload_bytes:
        x = torch.from_numpy(_load_all(files, size, channels, crop, num_workers, progress))
        return image_bundle(name, x, test_fraction, split_seed, extra={"files": len(files)})
    tr, te = split_indices(len(files), test_fraction, split_seed)
    base = ImageFolderData(files, size, channels, crop)
    info = DataInfo(name, "image", (channels, size, size), extra={"files": len(files)})
    return DataBundle(SubsetData(base, tr), SubsetData(base, te), info)


def load_celeba(folder: str, size: int, channels: int, test_fraction: float, split_seed: int,
                limit: Optional[int] = None, num_workers: int = 0, progress: bool = False) -> DataBundle:
    """Aligned CelebA: the folder of .jpg files, or a folder holding img_align_celeba/."""
    inner = os.path.join(folder, "img_align_celeba")
    root = inner if os.path.isdir(inner) else folder
    return load_image_folder(root, f"celeba:{folder}", size, channels, test_fraction, split_seed,
                             crop=CELEBA_CROP, limit=limit, num_workers=num_workers, progress=progress)
