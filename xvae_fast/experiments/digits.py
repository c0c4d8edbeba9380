"""The bundled 8x8 digits: which stage-2 setup generates digits, measured over seeds.

    python -m xvae_fast.experiments.digits --out runs/sweep-digits --seeds 42,43,44

trains the standard VAE (under each likelihood) and the X-VAE setups (the library's defaults, one
choice changed at a time, and the paper's reading; see xvae_fast.experiments.sweep) and reports, per
setup and as mean ± std over the seeds: the test objective, Rec, the KL, the offline Fréchet distance
of samples (FD-LeNet, per-row and per-coordinate generation) and of reconstructions, precision /
recall, and the ex-post reference (the stage-1 autoencoder decoding prior samples). Writes results.md,
results.json and samples_by_setup.png in --out.
"""
from __future__ import annotations

import sys
from typing import List, Optional

from .sweep import main_for


def main(argv: Optional[List[str]] = None) -> int:
    return main_for("digits", argv, __doc__)


if __name__ == "__main__":
    sys.exit(main())
