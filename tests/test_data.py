"""Dataset loaders on small files the tests write themselves; the split is fixed by seed."""
import gzip
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from xvae_fast.config import TrainConfig, resolve
from xvae_fast.data import load_dataset, split_indices
from xvae_fast.data.builtin import CLUSTER_CENTRES, CLUSTER_STDS
from xvae_fast.data.mnist import read_idx
from xvae_fast.errors import ConfigError, DataError


def _load(**kw):
    return load_dataset(resolve(TrainConfig(**kw)))


def write_idx(path, array, gz=False):
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.tobytes()
    if gz:
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        with open(path, "wb") as f:
            f.write(data)


def test_split_is_fixed_by_seed_and_disjoint():
    a_tr, a_te = split_indices(100, 0.2, seed=3)
    b_tr, b_te = split_indices(100, 0.2, seed=3)
    c_tr, _ = split_indices(100, 0.2, seed=4)
    assert np.array_equal(a_tr, b_tr) and np.array_equal(a_te, b_te)
    assert not np.array_equal(a_tr, c_tr)
    assert len(a_te) == 20 and len(a_tr) == 80
    assert set(a_tr).isdisjoint(a_te) and set(a_tr) | set(a_te) == set(range(100))


def test_digits_bundled_8x8_in_unit_range():
    b = _load(dataset="digits")
    assert b.info.kind == "image" and b.info.shape == (1, 8, 8)
    assert len(b.train) + len(b.test) == 1797
    x = b.train.get_batch(torch.arange(len(b.train)))
    assert x.dtype == torch.float32 and x.min() >= 0 and x.max() <= 1 and x.max() > 0.9
    again = _load(dataset="digits")
    assert torch.equal(again.test.get_batch(torch.arange(5)), b.test.get_batch(torch.arange(5)))


def test_clusters_three_modes_from_a_seed():
    b = _load(dataset="clusters")
    x = b.train.get_batch(torch.arange(len(b.train))).numpy()
    assert b.info.shape == (2,) and x.shape[1] == 2
    assert b.info.extra["centres"] == CLUSTER_CENTRES.tolist()
    # not standardised by default: raw points, nearly all within 3 std of a mode, all modes used
    d = np.linalg.norm(x[:, None] - CLUSTER_CENTRES[None], axis=2) / CLUSTER_STDS[None]
    assert (d.min(1) <= 3).mean() > 0.97
    assert np.bincount(d.argmin(1), minlength=3).min() > 0.25 * len(x)
    other = _load(dataset="clusters", split_seed=1)
    assert not torch.equal(other.train.get_batch(torch.arange(10)), b.train.get_batch(torch.arange(10)))


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_idx_folder(tmp_path, gz):
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, (30, 28, 28), dtype=np.uint8)
    test = rng.integers(0, 256, (10, 28, 28), dtype=np.uint8)
    ext = ".gz" if gz else ""
    write_idx(tmp_path / f"train-images-idx3-ubyte{ext}", train, gz)
    write_idx(tmp_path / f"t10k-images-idx3-ubyte{ext}", test, gz)
    assert np.array_equal(read_idx(str(tmp_path / f"train-images-idx3-ubyte{ext}")), train)
    b = _load(dataset=f"mnist:{tmp_path}")
    assert b.info.shape == (1, 28, 28) and len(b.train) == 30 and len(b.test) == 10
    # the official split is kept, pixels scaled to [0, 1]
    assert torch.allclose(b.test.get_batch([3])[0, 0], torch.from_numpy(test[3]).float() / 255)


def test_mnist_without_test_file_is_split_by_seed(tmp_path):
    # (varying pixels: a constant image set is refused)
    write_idx(tmp_path / "train-images-idx3-ubyte", np.arange(20 * 28 * 28).reshape(20, 28, 28) % 256)
    b = _load(dataset=f"mnist:{tmp_path}", test_fraction=0.25)
    assert len(b.train) == 15 and len(b.test) == 5


def test_an_interrupted_mnist_download_leaves_no_file(tmp_path, monkeypatch):
    # the first mirror breaks mid-file, the second delivers: each file appears whole or not at all
    import urllib.request
    from xvae_fast.data import mnist

    def fetch(url, name):
        with open(name, "wb") as f:
            f.write(b"half")
        if url.startswith(mnist.MIRRORS[0]):
            raise OSError("connection reset")
        with open(name, "wb") as f:
            f.write(url.encode())
    monkeypatch.setattr(urllib.request, "urlretrieve", fetch)
    mnist.download_mnist(str(tmp_path))
    stems = sorted(mnist.FILES.values())
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(s + ".gz" for s in stems)
    assert (tmp_path / f"{stems[0]}.gz").read_bytes() == f"{mnist.MIRRORS[1]}{stems[0]}.gz".encode()

    def offline(url, name):
        with open(name, "wb") as f:
            f.write(b"half")
        raise OSError("network unreachable")
    monkeypatch.setattr(urllib.request, "urlretrieve", offline)
    empty = tmp_path / "empty"
    with pytest.raises(DataError, match="could not download MNIST file"):
        mnist.download_mnist(str(empty))
    assert list(empty.iterdir()) == []


def test_mnist_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist.*--download"):
        _load(dataset=f"mnist:{tmp_path / 'nowhere'}")
    with pytest.raises(DataError, match="no train-images"):
        _load(dataset=f"mnist:{tmp_path}")
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((4, 20, 20), np.uint8))
    with pytest.raises(DataError, match="must be 28x28.*20x20"):
        _load(dataset=f"mnist:{tmp_path}")
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03" + struct.pack(">3I", 5, 28, 28)
                                                       + b"\x00" * 100)
    with pytest.raises(DataError, match="truncated"):
        _load(dataset=f"mnist:{tmp_path}")
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"PNG not idx")
    with pytest.raises(DataError, match="not an IDX file"):
        _load(dataset=f"mnist:{tmp_path}")


def _write_images(folder, n, size, mode="RGB", seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        w, h = size
        arr = rng.integers(0, 256, (h, w, 3) if mode == "RGB" else (h, w), dtype=np.uint8)
        Image.fromarray(arr, mode).save(folder / f"img_{i:03d}.png")


def test_celeba_folder_centre_crop_and_resize(tmp_path):
    root = tmp_path / "celeba"
    _write_images(root / "img_align_celeba", 6, (89, 109))
    # a left half black, right half white image: the centre crop keeps both halves
    arr = np.zeros((109, 89, 3), np.uint8)
    arr[:, 45:] = 255
    Image.fromarray(arr).save(root / "img_align_celeba" / "img_999.png")
    b = _load(dataset=f"celeba:{root}", test_fraction=0.3)
    assert b.info.shape == (3, 64, 64)
    assert len(b.train) + len(b.test) == 7
    full = torch.cat([b.train.get_batch(torch.arange(len(b.train))), b.test.get_batch(torch.arange(len(b.test)))])
    halves = [img for img in full if img[:, :, :20].max() < 0.05 and img[:, :, -20:].min() > 0.95]
    assert len(halves) == 1


def test_image_folder_grey_and_size(tmp_path):
    _write_images(tmp_path / "a", 4, (40, 30), mode="L")
    _write_images(tmp_path / "a" / "sub", 3, (50, 50), mode="RGB", seed=1)
    b = _load(dataset=f"images:{tmp_path / 'a'}", image_size=28, channels=1)
    assert b.info.shape == (1, 28, 28) and len(b.train) + len(b.test) == 7
    x = b.train.get_batch(torch.arange(len(b.train)))
    assert x.min() >= 0 and x.max() <= 1 and x.std() > 0.1


def test_image_folder_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        _load(dataset=f"images:{tmp_path / 'missing'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no images"):
        _load(dataset=f"images:{tmp_path / 'empty'}")
    _write_images(tmp_path / "small", 3, (20, 20))
    with pytest.raises(DataError, match=r"20x20, smaller than the 64x64.*--image-size"):
        _load(dataset=f"images:{tmp_path / 'small'}")
    with pytest.raises(ConfigError, match="unsupported image size 48"):
        _load(dataset=f"images:{tmp_path / 'small'}", image_size=48)
    _write_images(tmp_path / "bad", 2, (70, 70))
    (tmp_path / "bad" / "broken.png").write_bytes(b"not really a png")
    with pytest.raises(DataError, match="could not read image.*broken.png"):
        _load(dataset=f"images:{tmp_path / 'bad'}")


def test_npy_and_npz_vectors(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(5.0, 3.0, (50, 4)).astype(np.float32)
    np.save(tmp_path / "d.npy", x)
    b = _load(dataset=f"npy:{tmp_path / 'd.npy'}")
    tr = b.train.get_batch(torch.arange(len(b.train)))
    assert b.info.shape == (4,) and len(b.train) == 40
    assert torch.allclose(tr.mean(0), torch.zeros(4), atol=1e-5)  # standardised by the train split
    assert torch.allclose(b.info.to_data_space(b.test.get_batch([0]))[0],
                          torch.from_numpy(x[split_indices(50, 0.2, 0)[1][0]]), atol=1e-4)
    np.savez(tmp_path / "d.npz", other=np.zeros(3), x=x)
    b2 = _load(dataset=f"npy:{tmp_path / 'd.npz'}", standardize=False)
    assert torch.equal(b2.train.get_batch([0]), torch.from_numpy(x[split_indices(50, 0.2, 0)[0][:1]]))
    np.savez(tmp_path / "two.npz", a=x, b=x)
    with pytest.raises(DataError, match="several arrays.*--npz-key"):
        _load(dataset=f"npy:{tmp_path / 'two.npz'}")
    assert len(_load(dataset=f"npy:{tmp_path / 'two.npz'}", npz_key="b").train) == 40


def test_npy_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        _load(dataset=f"npy:{tmp_path / 'nope.npy'}")
    np.save(tmp_path / "three.npy", np.zeros((4, 2, 2)))
    with pytest.raises(DataError, match=r"2-D array.*\(4, 2, 2\)"):
        _load(dataset=f"npy:{tmp_path / 'three.npy'}")
    bad = np.zeros((5, 2))
    bad[3, 1] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    with pytest.raises(DataError, match=r"NaN or inf.*\(3, 1\)"):
        _load(dataset=f"npy:{tmp_path / 'nan.npy'}")
    (tmp_path / "junk.npy").write_bytes(b"garbage")
    with pytest.raises(DataError, match="could not read"):
        _load(dataset=f"npy:{tmp_path / 'junk.npy'}")


def test_dataset_spec_errors():
    with pytest.raises(ConfigError, match="unknown dataset 'cifar'"):
        _load(dataset="cifar")
    with pytest.raises(ConfigError, match="needs a path"):
        _load(dataset="images")
    with pytest.raises(ConfigError, match="takes no path"):
        _load(dataset="digits:/tmp")
