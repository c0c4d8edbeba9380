"""Labels in the data bundles, the offline feature classifier (deterministic, cached) and the choice
of the offline feature space."""
import gzip
import struct

import numpy as np
import pytest
import torch

from xvae_fast.config import TrainConfig, resolve
from xvae_fast.data import load_dataset, split_indices
from xvae_fast.data.builtin import CLUSTER_CENTRES, CLUSTER_STDS
from xvae_fast.evaluation.feature_classifier import Recipe, get_classifier, train_classifier
from xvae_fast.evaluation.runner import EvalOptions, _offline_space, parse_alphas, parse_metrics
from xvae_fast.errors import ConfigError, DataError


def _load(**kw):
    return load_dataset(resolve(TrainConfig(**kw)))


def write_idx(path, array):
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.tobytes())


def test_digits_labels_follow_the_split():
    from sklearn.datasets import load_digits
    raw = load_digits()
    b = _load(dataset="digits")
    tr, te = split_indices(1797, 0.2, 0)
    assert b.has_labels and b.train_labels.dtype == torch.int64
    assert np.array_equal(b.train_labels.numpy(), raw.target[tr])
    assert np.array_equal(b.test_labels.numpy(), raw.target[te])
    # the images the labels belong to
    assert np.allclose(b.test.get_batch(torch.arange(5))[:, 0].numpy(), raw.images[te[:5]] / 16.0)
    lim = _load(dataset="digits", limit=100)
    assert len(lim.train_labels) == len(lim.train) and len(lim.test_labels) == len(lim.test)


def test_cluster_labels_name_the_mode():
    b = _load(dataset="clusters")
    x = b.train.get_batch(torch.arange(len(b.train))).numpy()
    nearest = np.linalg.norm(x[:, None] - CLUSTER_CENTRES[None], axis=2).argmin(1)
    assert len(b.train_labels) == len(b.train)
    assert (nearest == b.train_labels.numpy()).mean() > 0.97
    assert set(b.test_labels.tolist()) == {0, 1, 2}


def test_mnist_labels_read_when_the_label_files_are_there(tmp_path):
    rng = np.random.default_rng(0)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (30, 28, 28)))
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (10, 28, 28)))
    b = _load(dataset=f"mnist:{tmp_path}")
    assert not b.has_labels and b.train_labels is None
    y_train, y_test = rng.integers(0, 10, 30), rng.integers(0, 10, 10)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", y_train)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", y_test)
    b = _load(dataset=f"mnist:{tmp_path}")
    assert np.array_equal(b.train_labels.numpy(), y_train) and np.array_equal(b.test_labels.numpy(), y_test)
    b = _load(dataset=f"mnist:{tmp_path}", limit=8, test_fraction=0.25)
    assert np.array_equal(b.train_labels.numpy(), y_train[:8]) and len(b.test_labels) == len(b.test) == 2
    # a label file that does not match its images is ignored with a warning (training needs none)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", y_test[:7])
    with pytest.warns(UserWarning, match="ignoring MNIST labels"):
        b = _load(dataset=f"mnist:{tmp_path}")
    assert not b.has_labels


def test_classifier_training_is_deterministic_and_cached(tmp_path):
    b = _load(dataset="clusters", limit=600)
    x_tr = b.train.get_batch(torch.arange(len(b.train)))
    x_te = b.test.get_batch(torch.arange(len(b.test)))
    recipe = Recipe(min_steps=150, max_steps=150)
    one = train_classifier("vector", (2,), x_tr, b.train_labels, x_te, b.test_labels, recipe)
    two = train_classifier("vector", (2,), x_tr, b.train_labels, x_te, b.test_labels, recipe)
    assert one.meta["weights_sha256_16"] == two.meta["weights_sha256_16"]
    assert one.meta["test_accuracy"] > 0.9 and one.meta["steps"] == 150
    assert np.array_equal(one.features(x_te), two.features(x_te))
    other = train_classifier("vector", (2,), x_tr, b.train_labels, x_te, b.test_labels,
                             Recipe(seed=1, min_steps=150, max_steps=150))
    assert other.meta["weights_sha256_16"] != one.meta["weights_sha256_16"]
    # the cache: trained once, then reused; keyed by the data (another split trains another)
    cache = str(tmp_path / "cache")
    first = get_classifier(b, cache, recipe)
    again = get_classifier(b, cache, recipe)
    assert first.meta["cached"] is False and again.meta["cached"] is True
    assert again.meta["weights_sha256_16"] == first.meta["weights_sha256_16"] == one.meta["weights_sha256_16"]
    b2 = _load(dataset="clusters", limit=600, split_seed=1)
    assert get_classifier(b2, cache, recipe).meta["cache_file"] != first.meta["cache_file"]
    # a corrupt cache file is retrained over, with a warning
    with open(first.meta["cache_file"], "wb") as f:
        f.write(b"junk")
    with pytest.warns(UserWarning, match="retraining"):
        fixed = get_classifier(b, cache, recipe)
    assert fixed.meta["cached"] is False and fixed.meta["weights_sha256_16"] == one.meta["weights_sha256_16"]


def test_offline_space_per_kind_of_data(tmp_path):
    b = _load(dataset="clusters", limit=300)
    opts = EvalOptions(cache_dir=str(tmp_path), classifier_steps=50)
    assert _offline_space(b, b.info, opts, print).fd_key == "fd_mlp"
    b.train_labels = b.test_labels = None                   # unlabelled vectors: the vectors themselves
    sp = _offline_space(b, b.info, opts, print)
    x = torch.randn(5, 2)
    assert sp.fd_key == "fd_data" and np.array_equal(sp.fn(x)[0], x.double().numpy())
    d = _load(dataset="digits", limit=50)
    d.train_labels = d.test_labels = None                   # unlabelled images: none offline
    assert _offline_space(d, d.info, opts, print) is None
    with pytest.raises(DataError, match="no labels"):
        get_classifier(d, str(tmp_path))


def test_metric_units_apply_by_what_they_declare():
    from types import SimpleNamespace
    from xvae_fast.evaluation import units
    from xvae_fast.models.generative import GenerativeModule

    def chosen(metrics, extra=None, model=None, nll=None):
        ev = SimpleNamespace(metrics=metrics, info=SimpleNamespace(extra=extra or {}),
                             model=model or GenerativeModule(), opts=SimpleNamespace(nll=nll))
        return [type(u).__name__ for u in units.UNITS if u.applies(ev)]

    class Interpolating(GenerativeModule):
        interpolates = True                                      # declares interpolate(x1, x2, t)
    uae = Interpolating()
    assert chosen(("rec", "fd", "pr")) == ["Rec", "FrechetDistance", "PrecisionRecall"]
    assert chosen(("rec", "fd"), model=uae) == ["Rec", "FrechetDistance", "InterpolationFD"]
    assert chosen(("rec",), model=uae) == ["Rec"]               # Interp is a Fréchet distance
    assert chosen(("fid", "is"), extra={"toy2d": {}}) == ["FrechetDistance", "Histogram2D", "InceptionScore"]
    assert chosen(("rec",), extra={"centres": [], "stds": []}, nll=object()) == ["NLL", "Rec", "ClusterModes"]


def test_cluster_modes_count_the_points_within_three_stds_of_a_mode():
    from types import SimpleNamespace
    from xvae_fast.evaluation.units import ClusterModes
    info = SimpleNamespace(extra={"centres": CLUSTER_CENTRES.tolist(), "stds": CLUSTER_STDS.tolist()})
    c, s = CLUSTER_CENTRES, CLUSTER_STDS
    # 2.9 std from mode 0 (inside), 3.1 std from mode 1 (outside, and far from the others), far away
    x = np.array([c[0] + [0.0, 2.9 * s[0]], c[1] + [-3.1 * s[1], 0.0], [10.0, 10.0]])
    assert ClusterModes.counts(info, x) == [1, 0, 0]
    assert ClusterModes.within(info, x) == pytest.approx(1 / 3)
    assert ClusterModes().fits(info) and not ClusterModes().fits(SimpleNamespace(extra={}))


def test_argument_parsing():
    assert parse_alphas("1.5, 0.5,1") == [0.5, 1.0, 1.5]
    assert parse_alphas("none") == []
    for bad in ("0.5,x", "0,1", "nan", "-1"):
        with pytest.raises(ConfigError, match="--alpha"):
            parse_alphas(bad)
    assert parse_metrics("default") == ("rec", "fd", "pr")
    assert parse_metrics("is,rec,inception") == ("rec", "fid", "is")
    assert parse_metrics("all") == ("rec", "fd", "pr", "fid", "is")
    with pytest.raises(ConfigError, match="--metrics"):
        parse_metrics("fd,lpips")
