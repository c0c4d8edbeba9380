"""The X-VAE paper's own reported numbers (paper 000: Tables 8 and 9, the complete per-model results,
and Table 4's parameter counts), keyed by `compare`'s row keys, so a comparison on MNIST or CelebA
prints them beside ours. Values as printed in the paper; its objectives are squared error summed per
image plus Eq. 18's KL (comparable with ours only under `--preset paper`), its FID is Inception's
(ours is offline FD-LeNet unless --inception-weights is given), and its parameter counts are in
millions (total) and thousands (prior)."""
from __future__ import annotations

from typing import Dict, Optional

# dataset -> row key -> {train, test, recon, kl (Table 9), rec, fid, is_mean, is_std (Table 8),
#                        params_m, prior_k (Table 4)}
_COLS_9 = ("train", "test", "recon", "kl")
_COLS_8 = ("rec", "fid", "is_mean", "is_std")

_TABLE_9 = {
    "mnist": {
        "vae": (28.96, 28.85, 16.67, 12.29), "vamp": (28.59, 28.30, 17.51, 11.08),
        "hierarchical": (28.31, 28.10, 16.64, 11.67), "mog": (29.50, 29.24, 17.70, 11.80),
        "gmvae": (69.37, 69.17, 10.03, 59.33), "single": (29.16, 29.00, 17.29, 11.86),
        "interleaved": (29.02, 28.75, 16.91, 12.11), "k1-pp-np": (29.11, 28.90, 17.24, 11.87),
        "k1-pq-np": (28.82, 28.61, 16.70, 12.13), "k1-pp-nq": (28.89, 28.69, 17.06, 11.83),
        "k1-pq-nq": (28.91, 28.56, 16.88, 12.04), "full": (29.06, 28.97, 17.09, 11.97),
        "split-2/3": (29.08, 28.75, 16.98, 12.10), "split-1/3": (29.18, 29.16, 17.47, 11.71),
    },
    "celeba": {
        "vae": (167.34, 165.19, 111.75, 55.59), "vamp": (166.09, 166.22, 111.51, 54.57),
        "hierarchical": (173.22, 170.79, 124.64, 48.58), "mog": (167.87, 167.96, 112.89, 54.98),
        "gmvae": (231.67, 232.07, 103.47, 128.21), "single": (166.68, 165.51, 110.90, 55.77),
        "interleaved": (166.74, 167.44, 110.85, 55.89), "k1-pp-np": (166.49, 164.19, 110.68, 55.80),
        "k1-pq-np": (166.64, 164.82, 110.61, 56.03), "k1-pp-nq": (166.73, 167.15, 111.11, 55.62),
        "k1-pq-nq": (167.88, 164.65, 111.95, 55.93), "full": (167.03, 165.31, 111.30, 55.73),
        "split-2/3": (166.59, 165.42, 110.58, 56.01), "split-1/3": (166.82, 164.19, 110.86, 55.96),
    },
}
_TABLE_8 = {
    "mnist": {
        "vae": (11.24, 49.67, 2.382, .068), "vamp": (12.12, 47.76, 2.460, .093),
        "hierarchical": (11.89, 46.64, 2.411, .065), "mog": (12.88, 58.27, 2.631, .101),
        "gmvae": (4.98, 79.08, 2.062, .063), "single": (12.18, 50.17, 2.423, .089),
        "interleaved": (11.85, 47.04, 2.435, .119), "k1-pp-np": (12.30, 48.42, 2.391, .113),
        "k1-pq-np": (11.89, 47.41, 2.402, .071), "k1-pp-nq": (12.12, 48.13, 2.418, .092),
        "k1-pq-nq": (11.60, 47.21, 2.411, .079), "full": (12.26, 49.04, 2.360, .083),
        "split-2/3": (11.65, 47.54, 2.382, .106), "split-1/3": (12.06, 46.01, 2.370, .107),
    },
    "celeba": {
        "vae": (87.42, 86.34, 1.816, .052), "vamp": (90.27, 82.80, 1.858, .047),
        "hierarchical": (104.60, 87.09, 1.806, .073), "mog": (92.63, 87.49, 1.795, .034),
        "gmvae": (74.99, 89.14, 1.781, .037), "single": (88.86, 84.45, 1.807, .053),
        "interleaved": (91.64, 85.46, 1.823, .066), "k1-pp-np": (88.09, 84.79, 1.774, .063),
        "k1-pq-np": (87.99, 80.40, 1.772, .060), "k1-pp-nq": (92.79, 86.55, 1.818, .072),
        "k1-pq-nq": (88.40, 83.11, 1.797, .032), "full": (87.54, 85.23, 1.746, .029),
        "split-2/3": (88.24, 81.90, 1.807, .070), "split-1/3": (87.66, 89.07, 1.848, .066),
    },
}
# Table 4: (total trainable, millions; prior, thousands); "X-VAE MoG" covers every routed row
_TABLE_4 = {
    "mnist": {"vae": (0.58, 0), "vamp": (0.74, 157), "hierarchical": (1.58, 74), "mog": (0.58, 1.3),
              "gmvae": (2.96, 1.3), "single": (0.58, 0), "routed": (0.71, 0)},
    "celeba": {"vae": (4.53, 0), "vamp": (4.92, 393), "hierarchical": (5.35, 280), "mog": (4.54, 5.1),
               "gmvae": (23.46, 5.1), "single": (4.53, 0), "routed": (5.58, 0)},
}
ROUTED = ("interleaved", "k1-pp-np", "k1-pq-np", "k1-pp-nq", "k1-pq-nq", "full", "split-2/3", "split-1/3")


def dataset_name(spec: str) -> str:
    """'mnist' of 'mnist:../shared/data/mnist'."""
    return spec.split(":", 1)[0].strip().lower()


def paper_row(spec: str, key: str) -> Optional[Dict[str, float]]:
    """The paper's numbers for one row on one dataset, or None when it reports none."""
    name = dataset_name(spec)
    if name not in _TABLE_9 or key not in _TABLE_9[name]:
        return None
    row = dict(zip(_COLS_9, _TABLE_9[name][key]))
    row.update(zip(_COLS_8, _TABLE_8[name][key]))
    params = _TABLE_4[name].get("routed" if key in ROUTED else key)
    if params:
        row.update(params_m=params[0], prior_k=params[1])
    return row
