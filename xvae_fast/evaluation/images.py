"""Image handling of the protocol: the PNG round trip of the paper's FID protocol (images written as
8-bit PNG files and read back the way pytorch-fid reads them)."""
from __future__ import annotations

import os

import numpy as np
import torch


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) in [0, 1] -> (N, H, W, C) uint8, rounding as torchvision's save_image does
    (x * 255 + 0.5, clamped, truncated)."""
    x = images.detach().float().cpu().mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8)
    return x.permute(0, 2, 3, 1).numpy()


def write_pngs(images: torch.Tensor, folder: str, start: int = 0) -> list:
    """Write each image as folder/00000.png (grayscale or RGB), numbered from `start` (a stream of
    batches); returns the sorted file list."""
    from PIL import Image
    os.makedirs(folder, exist_ok=True)
    files = []
    for i, arr in enumerate(to_uint8(images)):
        path = os.path.join(folder, f"{start + i:05d}.png")
        Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr).save(path)
        files.append(path)
    return files


def read_pngs(files, channels: int) -> torch.Tensor:
    """PNG files -> (N, channels, H, W) float in [0, 1]: read as RGB like pytorch-fid (convert("RGB"),
    ToTensor); one channel of it when the images are grayscale (its three channels are equal)."""
    from PIL import Image
    out = []
    for f in files:
        with Image.open(f) as im:
            arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
        out.append(torch.from_numpy(arr.copy()).permute(2, 0, 1))
    x = torch.stack(out).float().div_(255.0)
    return x[:, :1] if channels == 1 else x


def png_roundtrip(images: torch.Tensor, folder: str, start: int = 0) -> torch.Tensor:
    """The images as the PNG protocol sees them: written to `folder` as PNG and read back."""
    return read_pngs(write_pngs(images, folder, start), images.shape[1])
