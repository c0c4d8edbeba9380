"""The Inception-v3 network of FID (pytorch-fid's "FID Inception"), without torchvision.

This is our own implementation of the network pytorch-fid builds: torchvision's Inception3 layout
(1008 output classes, no auxiliary head) with the TensorFlow-compatible changes of pytorch-fid's
FIDInceptionA / C / E_1 / E_2 blocks: their 3x3 average pools leave the zero padding out of the
average, and the last block max-pools its pool branch. Module names follow torchvision, so
`state_dict()` has exactly the keys and shapes of pytorch-fid's weight file
`pt_inception-2015-12-05-6726825d.pth` (the TensorFlow 2015-12-05 graph ported to PyTorch), which
therefore loads with strict=True.

`forward(images)` takes (N, 3, H, W) in [0, 1], resizes to 299x299 (bilinear, align_corners=False),
maps [0, 1] to [-1, 1] as pytorch-fid does, and returns the 2048-d pool features (pytorch-fid's
default FID features) and the 1008 class logits (for the Inception Score).

Weights (`resolve_weights`): an explicit file (`--inception-weights PATH`), else the torch hub cache
(`<torch.hub.get_dir()>/checkpoints/pt_inception-2015-12-05-6726825d.pth`, where pytorch-fid puts
its download), else a download from pytorch-fid's release. Offline with no file, a clear
`InceptionWeightsError` says how to provide them.
"""
from __future__ import annotations

import os
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import XVAEError

FID_WEIGHTS_URL = ("https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
                   "pt_inception-2015-12-05-6726825d.pth")
FID_WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
NUM_CLASSES = 1008
POOL_DIMS = 2048
INPUT_SIZE = 299
# pytorch-fid's feature sizes (--dims) and the layer each is read after
BLOCK_END = {64: "maxpool1", 192: "maxpool2", 768: "Mixed_6e", 2048: "avgpool"}


class InceptionWeightsError(XVAEError, RuntimeError):
    """The FID Inception weights are missing, unreadable or do not fit the network."""


def hub_cache_path() -> str:
    """Where pytorch-fid (torch.hub) keeps the downloaded FID Inception weights."""
    return os.path.join(torch.hub.get_dir(), "checkpoints", FID_WEIGHTS_FILE)


def how_to_provide() -> str:
    return (f"provide the FID Inception weights in one of three ways: (1) pass --inception-weights "
            f"PATH to a copy of {FID_WEIGHTS_FILE}; (2) put that file in the torch hub cache at "
            f"{hub_cache_path()} (where pytorch-fid stores it; set TORCH_HOME to move the cache); "
            f"(3) run once with network access so it is downloaded from {FID_WEIGHTS_URL}")


# -- the network ---------------------------------------------------------------------------------
class BasicConv2d(nn.Module):
    """Convolution without bias, batch norm (eps 1e-3), ReLU."""

    def __init__(self, cin: int, cout: int, **kw):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, bias=False, **kw)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)), inplace=True)


def _pool_tf(x):
    """3x3 stride-1 average pool that, like TensorFlow, averages only over the unpadded pixels."""
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class BlockA(nn.Module):          # Mixed_5b..5d (pytorch-fid's FIDInceptionA)
    def __init__(self, cin: int, pool_features: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch5x5_1 = BasicConv2d(cin, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(cin, pool_features, kernel_size=1)

    def forward(self, x):
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch1x1(x), b5, b3, self.branch_pool(_pool_tf(x))], 1)


class BlockB(nn.Module):          # Mixed_6a (grid reduction 35 -> 17)
    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3 = BasicConv2d(cin, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x):
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), b3, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class BlockC(nn.Module):          # Mixed_6b..6e (pytorch-fid's FIDInceptionC): factorised 7x7
    def __init__(self, cin: int, c7: int):
        super().__init__()
        row, col = dict(kernel_size=(1, 7), padding=(0, 3)), dict(kernel_size=(7, 1), padding=(3, 0))
        self.branch1x1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch7x7_1 = BasicConv2d(cin, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, **row)
        self.branch7x7_3 = BasicConv2d(c7, 192, **col)
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, **col)
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, **row)
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, **col)
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, **row)
        self.branch_pool = BasicConv2d(cin, 192, kernel_size=1)

    def forward(self, x):
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = x
        for i in range(1, 6):
            d = getattr(self, f"branch7x7dbl_{i}")(d)
        return torch.cat([self.branch1x1(x), b7, d, self.branch_pool(_pool_tf(x))], 1)


class BlockD(nn.Module):          # Mixed_7a (grid reduction 17 -> 8)
    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x):
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = x
        for i in range(1, 5):
            b7 = getattr(self, f"branch7x7x3_{i}")(b7)
        return torch.cat([b3, b7, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class BlockE(nn.Module):
    """Mixed_7b (pool="avg": pytorch-fid's FIDInceptionE_1, TF-style average pool) and Mixed_7c
    (pool="max": FIDInceptionE_2, which max-pools its pool branch as the TF graph does)."""

    def __init__(self, cin: int, pool: str):
        super().__init__()
        self.pool = pool
        self.branch1x1 = BasicConv2d(cin, 320, kernel_size=1)
        self.branch3x3_1 = BasicConv2d(cin, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(cin, 192, kernel_size=1)

    def forward(self, x):
        a = self.branch3x3_1(x)
        a = torch.cat([self.branch3x3_2a(a), self.branch3x3_2b(a)], 1)
        b = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        b = torch.cat([self.branch3x3dbl_3a(b), self.branch3x3dbl_3b(b)], 1)
        p = (F.max_pool2d(x, kernel_size=3, stride=1, padding=1) if self.pool == "max"
             else _pool_tf(x))
        return torch.cat([self.branch1x1(x), a, b, self.branch_pool(p)], 1)


class FIDInceptionV3(nn.Module):
    """The FID Inception-v3. `forward(x)` -> (pool features (N, 2048), logits (N, 1008)).

    `resize_to` is the side the input is resized to (299, the protocol's size; other sizes of at
    least 75 run through the same layers and are meant for quick checks only)."""

    def __init__(self, resize_to: int = INPUT_SIZE, normalize_input: bool = True):
        super().__init__()
        if resize_to < 75:
            raise ValueError(f"Inception-v3 needs inputs of at least 75x75 pixels, got {resize_to}")
        self.resize_to = int(resize_to)
        self.normalize_input = normalize_input
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.maxpool1 = nn.MaxPool2d(kernel_size=3, stride=2)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.maxpool2 = nn.MaxPool2d(kernel_size=3, stride=2)
        self.Mixed_5b = BlockA(192, pool_features=32)
        self.Mixed_5c = BlockA(256, pool_features=64)
        self.Mixed_5d = BlockA(288, pool_features=64)
        self.Mixed_6a = BlockB(288)
        self.Mixed_6b = BlockC(768, c7=128)
        self.Mixed_6c = BlockC(768, c7=160)
        self.Mixed_6d = BlockC(768, c7=160)
        self.Mixed_6e = BlockC(768, c7=192)
        self.Mixed_7a = BlockD(768)
        self.Mixed_7b = BlockE(1280, pool="avg")
        self.Mixed_7c = BlockE(2048, pool="max")
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(p=0.5)
        self.fc = nn.Linear(POOL_DIMS, NUM_CLASSES)
        self.init_random_()
        self.eval()
        for p in self.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def init_random_(self) -> "FIDInceptionV3":
        """A variance-preserving random initialisation (He-normal convolutions, identity batch norm,
        small fc), from the global torch RNG. Real use loads pytorch-fid's weights over it; a random
        network is for tests. (PyTorch's default initialisation shrinks the activations through the
        ~90 layers into float32 denormals, which are slow and make every image look alike.)"""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.fc.weight, std=0.01)
        nn.init.zeros_(self.fc.bias)
        return self

    STEM = ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1",
            "Conv2d_4a_3x3", "maxpool2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b",
            "Mixed_6c", "Mixed_6d", "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c", "avgpool")

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        # pytorch-fid always interpolates (an identity when the input is already 299x299)
        x = F.interpolate(x, size=(self.resize_to, self.resize_to), mode="bilinear",
                          align_corners=False)
        return 2 * x - 1 if self.normalize_input else x

    def forward(self, x: torch.Tensor, dims: int = POOL_DIMS,
                logits: bool = True) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """(features (N, dims), logits (N, 1008) or None). dims 2048: the final average pool
        (pytorch-fid's default); 64, 192, 768: the output of an earlier block, average-pooled over
        space (pytorch-fid's --dims). Without `logits`, the network stops after that block."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"the Inception network takes (N, 3, H, W) images, got {tuple(x.shape)}; "
                             "replicate grayscale images to 3 channels first (to_rgb)")
        if dims not in BLOCK_END:
            raise ValueError(f"Inception feature dims must be one of {sorted(BLOCK_END)}, got {dims!r}")
        x = self.preprocess(x)
        feats = None
        for name in self.STEM:
            x = getattr(self, name)(x)
            if name == BLOCK_END[dims]:
                feats = torch.flatten(F.adaptive_avg_pool2d(x, 1) if dims != POOL_DIMS else x, 1)
                if not logits:
                    return feats, None
        return feats, self.fc(self.dropout(torch.flatten(x, 1)))


def to_rgb(images: torch.Tensor) -> torch.Tensor:
    """(N, 1 or 3, H, W) -> (N, 3, H, W): grayscale replicated to the three channels."""
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected (N, 1, H, W) or (N, 3, H, W) images, got {tuple(images.shape)}")
    return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images


# -- weights -------------------------------------------------------------------------------------
def resolve_weights(path: Optional[str] = None, download: bool = True) -> Tuple[dict, str]:
    """(state dict, where it came from): `path`, else the torch hub cache, else the download."""
    if path is not None:
        if not os.path.isfile(path):
            raise InceptionWeightsError(f"--inception-weights {path!r} does not exist; "
                                        + how_to_provide())
        return _read_state_dict(path), path
    cached = hub_cache_path()
    if os.path.isfile(cached):
        return _read_state_dict(cached), cached
    if not download:
        raise InceptionWeightsError("the FID Inception weights are not in the torch hub cache and "
                                    "downloading is off; " + how_to_provide())
    try:
        sd = torch.hub.load_state_dict_from_url(FID_WEIGHTS_URL, progress=True, map_location="cpu",
                                                file_name=FID_WEIGHTS_FILE)
    except Exception as exc:  # offline, proxy, HTTP errors, a truncated download ...
        raise InceptionWeightsError(f"could not download the FID Inception weights ({type(exc).__name__}: "
                                    f"{exc}); " + how_to_provide()) from exc
    return _unwrap(sd, FID_WEIGHTS_URL), cached


def _unwrap(sd, where: str) -> dict:
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise InceptionWeightsError(f"{where!r} does not hold a state dict of tensors")
    return sd


def _read_state_dict(path: str) -> dict:
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, not a torch file, pickled objects ...
        raise InceptionWeightsError(f"could not read Inception weights {path!r}: {exc}") from exc
    return _unwrap(sd, path)


def load_inception(path: Optional[str] = None, download: bool = True, device="cpu",
                   resize_to: int = INPUT_SIZE) -> Tuple[FIDInceptionV3, str]:
    """(the FID Inception network with its weights loaded strictly, in eval mode, the weights' source)."""
    sd, source = resolve_weights(path, download)
    net = FIDInceptionV3(resize_to=resize_to)
    try:
        net.load_state_dict(sd, strict=True)
    except RuntimeError as exc:
        raise InceptionWeightsError(f"the weights in {source!r} do not fit the FID Inception-v3 "
                                    f"({str(exc).splitlines()[0]} ...); expected pytorch-fid's "
                                    f"{FID_WEIGHTS_FILE}") from exc
    return net.to(device).eval(), source


@torch.no_grad()
def inception_outputs(net: FIDInceptionV3, images: torch.Tensor, batch_size: int = 50,
                      device=None, progress: bool = False, desc: str = "inception",
                      dims: int = POOL_DIMS, logits: bool = True, logits_bias: bool = False):
    """(features (N, dims) float64 numpy, logits (N, 1008) float64 numpy or None) of images in
    [0, 1] ((N, 1 or 3, H, W); grayscale is replicated to RGB), batch by batch. The logits leave out
    the fc bias unless `logits_bias`: the original Inception Score code multiplies the pool features
    by the softmax weights only (torch-fidelity's "logits_unbiased" does the same)."""
    import numpy as np
    dev = device if device is not None else next(net.parameters()).device
    n = images.shape[0]
    feats = np.empty((n, dims), dtype=np.float64)
    out_logits = np.empty((n, NUM_CLASSES), dtype=np.float64) if logits else None
    starts = range(0, n, batch_size)
    if progress and n > batch_size:
        from ..progress import progress_bar
        starts = progress_bar(starts, desc=desc, unit="batch")
    for s in starts:
        x = to_rgb(images[s:s + batch_size].float()).to(dev)
        f, lg = net(x, dims=dims, logits=logits)
        feats[s:s + x.shape[0]] = f.double().cpu().numpy()
        if logits:
            if not logits_bias:
                lg = lg - net.fc.bias
            out_logits[s:s + x.shape[0]] = lg.double().cpu().numpy()
    return feats, out_logits
