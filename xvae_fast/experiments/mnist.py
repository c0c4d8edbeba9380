"""Real MNIST at the library's default budget (10 AE + 15 VAE epochs): which stage-2 setup generates
the best digits, measured over seeds (issue 28's MNIST counterpart of `experiments.digits`).

    python -m xvae_fast.experiments.mnist --data ../shared/data/mnist --out runs/sweep-mnist \\
        --setups default,kl-weight-1,vae --seeds 42,43,44

trains the chosen setups of xvae_fast.experiments.sweep on MNIST (a full X-VAE run is about 10
minutes on a 2-core CPU; the X-VAE setups of one seed share its stage-1 autoencoder) and reports, as
mean ± std over the seeds: the test objective, Rec, the KL, FD-LeNet of samples and reconstructions
(the offline LeNet trained on MNIST's labels), precision / recall, and the ex-post reference.
Writes results.md, results.json and samples_by_setup.png in --out.
"""
from __future__ import annotations

import sys
from typing import List, Optional

from .sweep import main_for


def main(argv: Optional[List[str]] = None) -> int:
    return main_for("mnist", argv, __doc__)


if __name__ == "__main__":
    sys.exit(main())
