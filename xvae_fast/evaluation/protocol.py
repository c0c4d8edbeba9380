"""The evaluation protocol: how many real and generated examples, batch sizes, image handling and
seeds. The defaults are the paper's FID protocol (its Table 6): 1,000 real test images, 2,000
generated images, generation batch 128, FID batch 50, images in [0, 1] (grayscale replicated to
RGB for Inception), pytorch-fid's Inception-v3 and Fréchet distance; the Inception Score over 10
splits. Every number `xvae_fast.evaluate` writes carries the protocol it was computed with."""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict, Optional

from ..errors import ConfigError
from ..ops.functional import ROUTINGS

SPLITS = ("test", "train")


@dataclasses.dataclass
class Protocol:
    n_real: int = 1000             # real images (a seeded subset of the split; all when fewer)
    n_fake: int = 2000             # generated images per alpha
    real_split: str = "test"
    batch_size: int = 50           # feature-extractor batch (pytorch-fid's default)
    gen_batch_size: int = 128      # generation / reconstruction batch
    routing: Optional[str] = None  # mixture priors: per-row or per-coordinate; None: the run's --routing
    seed: int = 0                  # real-subset choice, generation and reconstruction noise
    decoder_noise: bool = False    # samples x ~ p(x | z) instead of the decoded mean
    png: bool = False              # the paper's PNG round trip (8-bit images read back as RGB)
    inception_size: int = 299      # Inception input side (299: the protocol; others: quick checks)
    fid_dims: int = 2048           # Inception features of the FID: 2048 (pool3, the protocol), or
                                   # pytorch-fid's smaller --dims 64, 192, 768
    is_splits: int = 10            # Inception Score splits
    pr_k: int = 3                  # k of the precision / recall k-NN manifolds
    eps: float = 1e-6              # pytorch-fid's Fréchet distance offset for singular products: kept
                                   # in the protocol, unused by the eigenvalue route (frechet.py)

    def validate(self) -> "Protocol":
        for name, low in (("n_real", 2), ("n_fake", 2), ("batch_size", 1), ("gen_batch_size", 1),
                          ("is_splits", 1), ("pr_k", 1)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ConfigError(f"--{name.replace('_', '-')} must be an integer >= {low}, got {v!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"--seed must be a non-negative integer, got {self.seed!r}")
        if self.real_split not in SPLITS:
            raise ConfigError(f"--real-split must be one of {', '.join(SPLITS)}, got {self.real_split!r}")
        if self.routing is not None and self.routing not in ROUTINGS:
            raise ConfigError(f"--routing must be one of {', '.join(ROUTINGS)}, got {self.routing!r}")
        if (isinstance(self.inception_size, bool) or not isinstance(self.inception_size, int)
                or self.inception_size < 75):
            raise ConfigError(f"--inception-size must be an integer >= 75 (Inception-v3's smallest "
                              f"input; the protocol uses 299), got {self.inception_size!r}")
        if self.fid_dims not in (64, 192, 768, 2048):
            raise ConfigError(f"--fid-dims must be 64, 192, 768 or 2048 (pytorch-fid's --dims; the "
                              f"protocol uses 2048), got {self.fid_dims!r}")
        if not (isinstance(self.eps, (int, float)) and math.isfinite(self.eps) and self.eps > 0):
            raise ConfigError(f"eps must be a positive number, got {self.eps!r}")
        if self.pr_k >= self.n_real or self.pr_k >= self.n_fake:
            raise ConfigError(f"--pr-k {self.pr_k} must be smaller than --n-real ({self.n_real}) and "
                              f"--n-fake ({self.n_fake})")
        return self

    @property
    def is_paper_default(self) -> bool:
        d = Protocol()
        return all(getattr(self, k) == getattr(d, k) for k in
                   ("n_real", "n_fake", "batch_size", "gen_batch_size", "inception_size", "fid_dims",
                    "is_splits", "png"))

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)
