"""Dataset specifications (`--dataset`): parsing and per-dataset defaults."""
from __future__ import annotations

import dataclasses
from typing import Optional

from ..errors import ConfigError

# the 2-D benchmark of paper 001 (data/toy2d.py); bundled like digits and clusters
TOY2D_KINDS = ("8gaussians", "2spirals", "checkerboard", "rings")
KINDS = ("digits", "clusters") + TOY2D_KINDS + ("mnist", "celeba", "images", "npy")
BUNDLED = ("digits", "clusters") + TOY2D_KINDS
NEEDS_PATH = ("celeba", "images", "npy")
DEFAULT_PATHS = {"mnist": "data/mnist"}


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    kind: str
    path: Optional[str] = None

    def __str__(self) -> str:
        return self.kind if self.path is None else f"{self.kind}:{self.path}"


# latent size K, epochs (AE, VAE), MLP hidden sizes and standardisation (vector data), image size
# and channels (image folders). The bundled datasets train tiny nets, for which one CPU thread is as
# fast as several and immune to oversubscription on a busy machine.
DEFAULTS = {
    "digits": dict(latent=10, epochs_ae=30, epochs_vae=50, threads=1),
    "clusters": dict(latent=3, epochs_ae=30, epochs_vae=40, hidden=[64, 64], standardize=False,
                     threads=1),
    "mnist": dict(latent=64, epochs_ae=10, epochs_vae=15),
    "celeba": dict(latent=256, epochs_ae=10, epochs_vae=15, image_size=64, channels=3),
    "images": dict(latent=128, epochs_ae=10, epochs_vae=15, image_size=64, channels=3),
    "npy": dict(latent=8, epochs_ae=50, epochs_vae=50, hidden=[128, 128], standardize=True),
}
# The 2-D benchmark: latent 2 and the paper's MLP (Linear(2, 256)-ReLU then 3 x [Linear(256, 256)-ReLU]
# before the heads, mirrored in the decoder: four hidden layers of 256), no standardisation (the
# metric's window is in data units). 40 steps per epoch at the paper's batch 512: 50 epochs = 2,000
# steps per stage, a few minutes on one CPU thread (the paper trains 30,000 steps = 750 epochs).
DEFAULTS.update({k: dict(latent=2, epochs_ae=50, epochs_vae=50, hidden=[256, 256, 256, 256],
                         standardize=False, threads=1) for k in TOY2D_KINDS})


def parse_dataset_spec(spec) -> DatasetSpec:
    """'digits', 'clusters', a 2-D set ('8gaussians', '2spirals', 'checkerboard', 'rings'),
    'mnist[:DIR]', 'celeba:DIR', 'images:DIR' or 'npy:PATH'."""
    if isinstance(spec, DatasetSpec):
        return spec
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"--dataset must be a string such as 'digits' or 'mnist:DIR', got {spec!r}")
    kind, sep, path = spec.strip().partition(":")
    kind = kind.strip().lower()
    if kind not in KINDS:
        raise ConfigError(f"unknown dataset {spec!r}; choose digits, clusters, {', '.join(TOY2D_KINDS)}, "
                          "mnist:DIR, celeba:DIR, images:DIR or npy:PATH")
    path = path.strip() or None
    if kind in BUNDLED and path is not None:
        raise ConfigError(f"dataset {kind!r} is bundled and takes no path, got {spec!r}")
    if kind in NEEDS_PATH and path is None:
        raise ConfigError(f"dataset {kind!r} needs a path: --dataset {kind}:PATH")
    if path is None:
        path = DEFAULT_PATHS.get(kind)
    return DatasetSpec(kind, path)


def image_size_supported(size: int) -> bool:
    """Sizes the conv architectures handle: 8 (digits), 28 (MNIST) and powers of two 16..256."""
    return size in (8, 28) or (isinstance(size, int) and 16 <= size <= 256 and size & (size - 1) == 0)


def check_image_size(size) -> None:
    if isinstance(size, bool) or not isinstance(size, int) or not image_size_supported(size):
        raise ConfigError(f"unsupported image size {size!r}: the conv architectures take square images "
                          "of 8, 28, or a power of two from 16 to 256 pixels (--image-size)")
