"""Encoder bodies and decoders (paper Table 5), chosen by the data's shape.

- 28x28 images (MNIST): conv encoder with channels C-32-64-128 (28 -> 14 -> 7 -> 4), mirrored
  transposed-conv decoder.
- powers of two 16..256 (CelebA at 64x64): C-32-64-128-256 (4x4 stride-2 convs down to 4x4; more
  layers, capped at 512 channels, for larger sizes), mirrored decoder.
- 8x8 images (scikit-learn digits): a small C-32-64 conv net (8 -> 8 -> 4).
- vectors (D,): an MLP with the `hidden` layer sizes, mirrored in the decoder.
Decoders emit a raw output (linear, no final squashing); the model's likelihood (models.likelihood)
maps it to the data-space mean: a sigmoid for images (pixels in [0, 1]) and for Bernoulli data, the
identity for other vectors. The body maps an example to a flat feature vector; the heads
(models.autoencoder / models.vae) map it to the latent.
"""
from __future__ import annotations

import math
from typing import List, Sequence, Tuple

from torch import nn

from ..data.spec import check_image_size


def _conv_layers(size: int, channels: int) -> Tuple[List[tuple], int, int]:
    """[(in, out, kernel, stride, padding)], final channels, final spatial size."""
    if size == 8:
        return [(channels, 32, 3, 1, 1), (32, 64, 4, 2, 1)], 64, 4
    if size == 28:
        return [(channels, 32, 4, 2, 1), (32, 64, 4, 2, 1), (64, 128, 3, 2, 1)], 128, 4
    n = int(math.log2(size)) - 2
    widths = [min(32 * 2 ** i, 512) for i in range(n)]
    layers, c = [], channels
    for w in widths:
        layers.append((c, w, 4, 2, 1))
        c = w
    return layers, c, 4


class ConvBody(nn.Module):
    def __init__(self, shape: Sequence[int]):
        super().__init__()
        c, h, w = shape
        if h != w:
            raise ValueError(f"the conv architectures take square images, got {h}x{w}")
        check_image_size(h)
        layers, self.out_channels, self.out_size = _conv_layers(h, c)
        mods = []
        for (i, o, k, s, p) in layers:
            mods += [nn.Conv2d(i, o, k, s, p), nn.ReLU(inplace=True)]
        self.net = nn.Sequential(*mods, nn.Flatten())
        self.features = self.out_channels * self.out_size ** 2

    def forward(self, x):
        return self.net(x)


class ConvDecoder(nn.Module):
    def __init__(self, latent: int, shape: Sequence[int]):
        super().__init__()
        c, h, _ = shape
        check_image_size(h)
        layers, top, base = _conv_layers(h, c)
        self.top, self.base = top, base
        self.fc = nn.Sequential(nn.Linear(latent, top * base * base), nn.ReLU(inplace=True))
        mods = []
        rev = list(reversed(layers))
        for j, (i, o, k, s, p) in enumerate(rev):
            last = j == len(rev) - 1
            conv = (nn.ConvTranspose2d(o, i, k, s, p) if s == 2 else nn.Conv2d(o, i, k, s, p))
            mods.append(conv)
            if not last:
                mods.append(nn.ReLU(inplace=True))
        self.net = nn.Sequential(*mods)
        self.shape = tuple(shape)

    def forward(self, z):
        h = self.fc(z).view(z.shape[0], self.top, self.base, self.base)
        return self.net(h)


class MLPBody(nn.Module):
    def __init__(self, dim: int, hidden: Sequence[int]):
        super().__init__()
        mods, d = [], dim
        for hsize in hidden:
            mods += [nn.Linear(d, hsize), nn.ReLU(inplace=True)]
            d = hsize
        self.net = nn.Sequential(*mods)
        self.features = d

    def forward(self, x):
        return self.net(x)


class MLPDecoder(nn.Module):
    def __init__(self, latent: int, dim: int, hidden: Sequence[int]):
        super().__init__()
        mods, d = [], latent
        for hsize in reversed(list(hidden)):
            mods += [nn.Linear(d, hsize), nn.ReLU(inplace=True)]
            d = hsize
        mods.append(nn.Linear(d, dim))
        self.net = nn.Sequential(*mods)

    def forward(self, z):
        return self.net(z)


def build_body(kind: str, shape: Sequence[int], hidden: Sequence[int] = (128, 128)) -> nn.Module:
    """The encoder body for data of `kind` ('image' or 'vector') and per-example `shape`."""
    if kind == "image":
        if len(shape) != 3:
            raise ValueError(f"image data must have a (C, H, W) shape, got {tuple(shape)}")
        return ConvBody(shape)
    if len(shape) != 1:
        raise ValueError(f"vector data must have a (D,) shape, got {tuple(shape)}")
    return MLPBody(shape[0], hidden)


def build_decoder(kind: str, latent: int, shape: Sequence[int],
                  hidden: Sequence[int] = (128, 128)) -> nn.Module:
    if kind == "image":
        return ConvDecoder(latent, shape)
    return MLPDecoder(latent, shape[0], hidden)
