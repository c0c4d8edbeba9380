"""Datasets behind one interface (`XDataset`, `DataBundle`, `DataInfo`); `load_dataset(cfg)` builds
the train/test bundle a `--dataset` spec names."""
from __future__ import annotations

from .base import DataBundle, DataInfo, SubsetData, TensorData, XDataset, describe, split_indices
from .spec import DEFAULTS, TOY2D_KINDS, DatasetSpec, check_image_size, parse_dataset_spec


def load_dataset(cfg) -> DataBundle:
    """The DataBundle for a resolved TrainConfig (see xvae_fast.config)."""
    spec = parse_dataset_spec(cfg.dataset)
    f, s, lim = cfg.test_fraction, cfg.split_seed, cfg.limit
    if spec.kind == "digits":
        from .builtin import load_digits
        return load_digits(f, s, lim)
    if spec.kind == "clusters":
        from .builtin import load_clusters
        return load_clusters(f, s, cfg.standardize, lim)
    if spec.kind in TOY2D_KINDS:
        from .toy2d import load_toy2d
        return load_toy2d(spec.kind, f, s, cfg.standardize, lim)
    if spec.kind == "mnist":
        from .mnist import load_mnist
        return load_mnist(spec.path, f, s, cfg.download, lim)
    if spec.kind == "npy":
        from .arrays import load_npy
        return load_npy(spec.path, f, s, cfg.standardize, cfg.npz_key, lim)
    check_image_size(cfg.image_size)
    from .images import load_celeba, load_image_folder
    if spec.kind == "celeba":
        return load_celeba(spec.path, cfg.image_size, cfg.channels, f, s, lim, cfg.num_workers,
                           cfg.progress)
    return load_image_folder(spec.path, f"images:{spec.path}", cfg.image_size, cfg.channels, f, s,
                             limit=lim, num_workers=cfg.num_workers, progress=cfg.progress)


__all__ = ["load_dataset", "DataBundle", "DataInfo", "XDataset", "TensorData", "SubsetData",
           "DatasetSpec", "parse_dataset_spec", "split_indices", "describe", "DEFAULTS"]
