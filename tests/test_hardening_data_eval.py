"""Issue 26, data and evaluation: 16-bit images, bounded precision / recall, a binary --config, the
Fréchet distance of degenerate covariances, sample batches sized from the decoder's widest layer,
options validated only for the models that use them, too few rows found before training, constant
data refused, and clear errors for float32 overflow, a text file named .npy and --lr inf."""
import importlib
import json

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import linalg
from scipy.spatial import cKDTree
from scipy.spatial.distance import cdist as scipy_cdist

from xvae_fast import sample
from xvae_fast.config import TrainConfig, resolve
from xvae_fast.data import load_dataset
from xvae_fast.data.images import load_image
from xvae_fast.errors import ConfigError, DataError
from xvae_fast.evaluation.frechet import frechet_distance, frechet_distance_from_features, gaussian_stats

from train_utils import TINY_CLUSTERS, TINY_DIGITS, one_thread, train

# the module (the package exports its function under the same name)
pr = importlib.import_module("xvae_fast.evaluation.precision_recall")


def _load(**kw):
    return load_dataset(resolve(TrainConfig(**kw)))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("hardening_data_eval_runs")
    out = {"clusters": str(root / "clusters"), "digits": str(root / "digits")}
    # the clusters' default MLP width (64): 64 values per row in its hidden layers, 32 times a 2-d sample
    assert train(*TINY_CLUSTERS, "--hidden", "64,64", "--no-outputs", "--out", out["clusters"]) == 0
    assert train(*TINY_DIGITS, "--no-outputs", "--out", out["digits"]) == 0
    return out


# -- item 2: 16-bit images are scaled, not clipped to white -----------------------------------------

def _grey16(path, seed=0, size=16):
    a = np.random.default_rng(seed).integers(0, 65536, (size, size)).astype(np.uint16)
    Image.fromarray(a).save(path)           # Pillow writes a 16-bit greyscale PNG (mode I;16)
    with Image.open(path) as im:
        assert im.mode == "I;16"
    return a


@pytest.mark.parametrize("channels", [1, 3])
def test_16bit_png_is_scaled_to_8_bits(tmp_path, channels):
    a = _grey16(tmp_path / "g16.png")
    x = load_image(str(tmp_path / "g16.png"), 16, channels)
    assert x.shape == (channels, 16, 16) and x.dtype == np.uint8
    expected = (a >> 8).astype(np.uint8)    # the high byte, as Pillow reads 16-bit RGB PNGs
    for c in range(channels):
        np.testing.assert_array_equal(x[c], expected)
    assert (x == 255).mean() < 0.05         # Pillow's own conversion clips nearly all of it to 255


@pytest.mark.parametrize("channels", [1, 3])
def test_a_folder_of_16bit_pngs_loads_as_its_images(tmp_path, channels):
    folder = tmp_path / "imgs"
    folder.mkdir()
    arrays = [_grey16(folder / f"{i}.png", seed=i) for i in range(6)]
    b = _load(dataset=f"images:{folder}", image_size=16, channels=channels)
    x = torch.cat([ds.get_batch(torch.arange(len(ds))) for ds in (b.train, b.test)])
    assert abs(float(x.mean()) - np.mean([a >> 8 for a in arrays]) / 255) < 1e-3   # about 0.5, not 1


def test_16bit_values_in_a_32bit_image_are_scaled_and_float_pixels_refused(tmp_path):
    a = np.random.default_rng(1).integers(0, 65536, (16, 16)).astype(np.int32)
    Image.fromarray(a).save(tmp_path / "i32.tif")                 # mode I
    np.testing.assert_array_equal(load_image(str(tmp_path / "i32.tif"), 16, 1)[0], (a >> 8).astype(np.uint8))
    Image.fromarray(a * 100).save(tmp_path / "wide.tif")
    with pytest.raises(DataError, match=r"wide.tif.*beyond the 16-bit range"):
        load_image(str(tmp_path / "wide.tif"), 16, 1)
    Image.fromarray(np.linspace(0, 1, 256, dtype=np.float32).reshape(16, 16)).save(tmp_path / "f.tif")
    with pytest.raises(DataError, match=r"f.tif.*floating-point pixels"):
        load_image(str(tmp_path / "f.tif"), 16, 3)


# -- item 8: precision / recall in bounded blocks, with a cap on the set sizes ------------------------

def test_precision_recall_blocks_stay_bounded_and_match_scipy(monkeypatch):
    rng = np.random.default_rng(0)
    real, fake = rng.standard_normal((700, 5)), 1.2 * rng.standard_normal((900, 5)) + 0.3
    monkeypatch.setattr(pr, "BLOCK_ELEMENTS", 5000)
    blocks = []
    real_cdist = torch.cdist

    def spy(a, b, *args, **kw):
        blocks.append(a.shape[0] * b.shape[0])
        return real_cdist(a, b, *args, **kw)

    monkeypatch.setattr(torch, "cdist", spy)
    k = 3
    r_real = pr.knn_radii(real, k, chunk=64)
    r_fake = pr.knn_radii(fake, k, chunk=64)
    got = pr.precision_recall(real, fake, k, chunk=64)
    assert max(blocks) <= 5000                       # never a (rows x all the other set) matrix
    # references: scipy's k-d tree for the radii, scipy's full distance matrix for the manifolds
    np.testing.assert_allclose(r_real.numpy(), cKDTree(real).query(real, k + 1)[0][:, k], rtol=1e-12)
    np.testing.assert_allclose(r_fake.numpy(), cKDTree(fake).query(fake, k + 1)[0][:, k], rtol=1e-12)
    precision = (scipy_cdist(fake, real) <= r_real.numpy()[None]).any(1).mean()
    recall = (scipy_cdist(real, fake) <= r_fake.numpy()[None]).any(1).mean()
    assert got == {"precision": pytest.approx(precision, abs=1e-12),
                   "recall": pytest.approx(recall, abs=1e-12)}


def test_precision_recall_caps_each_set_at_a_seeded_subset():
    rng = np.random.default_rng(1)
    real, fake = rng.standard_normal((150, 4)), rng.standard_normal((400, 4))
    got = pr.precision_recall(real, fake, 3, max_rows=200, seed=5)
    assert got["n_real_used"] == 150 and got["n_fake_used"] == 200
    sub = fake[np.sort(np.random.default_rng(6).choice(400, 200, replace=False))]
    want = pr.precision_recall(real, sub, 3)
    assert (got["precision"], got["recall"]) == (want["precision"], want["recall"])
    assert pr.precision_recall(real, fake, 3, max_rows=200, seed=5) == got       # repeatable
    assert set(pr.precision_recall(real, fake[:150], 3, max_rows=200)) == {"precision", "recall"}


def test_evaluate_caps_precision_recall_and_says_so(runs, tmp_path, monkeypatch):
    from xvae_fast.evaluate import main
    from xvae_fast.evaluation import units
    monkeypatch.setattr(units, "PR_MAX_ROWS", 120)
    with one_thread():
        assert main(["--run", runs["digits"], "--out", str(tmp_path / "ev"), "--classifier-steps", "50",
                     "--n-fake", "200", "--metrics", "pr", "--alpha", "1", "--cache-dir",
                     str(tmp_path / "cache"), "--no-progress"]) == 0
    with open(tmp_path / "ev" / "eval.json", encoding="utf-8") as f:
        rep = json.load(f)
    entry = next(v for k, v in rep["metrics"].items() if k.startswith("pr_"))
    assert entry["n_fake_used"] == 120 and entry["n_fake"] == 200
    assert any("seeded random subset of 120" in n for n in rep["notes"])


# -- item 9: a binary --config file --------------------------------------------------------------------

def test_binary_config_file_is_a_clear_error(tmp_path, capsys):
    from xvae_fast.train import main
    bad = tmp_path / "run.yaml"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe binary")
    assert main(["--config", str(bad), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "config file" in err and "run.yaml" in err and "not a text file" in err
    assert not (tmp_path / "r").exists()


# -- item 10: the Fréchet distance of degenerate covariances ----------------------------------------------

def test_frechet_distance_of_huge_and_rank_one_covariances():
    rng = np.random.default_rng(2)
    a = rng.standard_normal((6, 6))
    s1, s2 = a @ a.T + np.eye(6), np.diag(rng.uniform(0.5, 2, 6))
    mu1, mu2 = rng.standard_normal(6), rng.standard_normal(6)
    base = frechet_distance(mu1, s1, mu2, s2)
    # covariances near float64's limit: sqrtm's product overflows (LinAlgError); the value scales
    big = frechet_distance(mu1 * 1e150, s1 * 1e300, mu2 * 1e150, s2 * 1e300)
    assert big == pytest.approx(base * 1e300, rel=1e-9)
    # a huge rank-one covariance against itself: sqrtm gave a complex root (an error); exactly 0
    v = np.arange(6.0) * 1e75
    r1 = np.outer(v, v)
    assert abs(frechet_distance(np.zeros(6), r1, np.zeros(6), r1)) <= 1e-12 * np.trace(r1)
    # and against another covariance: Tr (S1 vv')^(1/2) = sqrt(v' S1 v)
    got = frechet_distance(np.zeros(6), s1 * 1e150, np.zeros(6), r1)
    assert got == pytest.approx(np.trace(s1) * 1e150 + v @ v - 2 * np.sqrt(v @ (s1 * 1e150) @ v), rel=1e-9)


def test_frechet_distance_of_rank_deficient_features():
    # fewer feature vectors than dimensions (2000 samples in 2048-d pool3 features, in small): the
    # covariances are singular; a set against itself is 0, another set agrees with a well-conditioned
    # computation
    rng = np.random.default_rng(3)
    mix = rng.standard_normal((64, 64))
    x = rng.standard_normal((30, 64)) @ mix
    y = 1.1 * rng.standard_normal((30, 64)) @ mix + 0.2
    mu, s = gaussian_stats(x)
    assert abs(frechet_distance(mu, s, mu, s)) <= 1e-12 * np.trace(s)
    # the same distance through 30-d coordinates of the span (full rank there): sqrtm is the reference
    basis = linalg.orth(np.vstack([x - x.mean(0), y - y.mean(0)]).T)
    xs, ys = x @ basis, y @ basis
    m1, c1 = gaussian_stats(xs)
    m2, c2 = gaussian_stats(ys)
    r1 = linalg.sqrtm(c1).real
    ref = float(np.sum((m1 - m2) ** 2) + np.trace(c1) + np.trace(c2)
                - 2 * np.trace(linalg.sqrtm(r1 @ c2 @ r1).real))
    ref += float(np.sum(((x.mean(0) - y.mean(0)) - basis @ (basis.T @ (x.mean(0) - y.mean(0)))) ** 2))
    assert frechet_distance_from_features(x, y) == pytest.approx(ref, rel=1e-8)


def test_frechet_distance_of_non_finite_covariances_is_not_defined():
    with pytest.raises(DataError, match="not defined: covariance 2 contains NaN or inf"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), np.full((3, 3), np.inf))
    with pytest.raises(DataError, match="not defined: covariance 1 contains NaN or inf"):
        frechet_distance(np.zeros(3), np.full((3, 3), np.nan), np.zeros(3), np.eye(3))


# -- item 11: sample batches sized from the decoder's widest layer --------------------------------------

@pytest.mark.parametrize("name", ["digits", "clusters"])
def test_sample_batches_bound_every_layer_output(runs, name):
    widest = []
    # every module's output while sampling (torch's global forward hook)
    handle = torch.nn.modules.module.register_module_forward_hook(
        lambda mod, i, o: widest.append(o.numel()) if isinstance(o, torch.Tensor) else None)
    n = 40_000    # above the old batch of 32,768 8x8 digits (whose 32 x 8 x 8 layer then held 256 MB)
    try:
        with one_thread():
            info, it = sample.sample_batches(runs[name], n)
            assert sum(x.shape[0] for x in it) == n
    finally:
        handle.remove()
    assert widest and max(widest) <= sample.BATCH_ELEMENTS


# -- item 12: a model's options are validated only for that model ------------------------------------------

def test_latent_above_1000_is_refused_only_by_the_mixture_fit():
    for kw in (dict(model="vae"), dict(model="vamp"), dict(model="xvae", plan="single")):
        assert resolve(TrainConfig(latent=1500, **kw)).latent == 1500
    with pytest.raises(ConfigError, match=r"--em-weight-floor 0.001 is too large.*--latent 1500"):
        resolve(TrainConfig(latent=1500))
    assert resolve(TrainConfig(latent=1500, em_weight_floor=1e-4)).latent == 1500


# -- item 13: too few rows for the prior fit, found before stage 1 trains -------------------------------

def _refused_before_training(tmp_path, capsys, *args):
    from xvae_fast.train import main
    out = tmp_path / "run"
    with one_thread():
        assert main([str(a) for a in args] + ["--no-progress", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert not out.exists(), "the run folder (and a trained stage 1) was left behind"
    assert "AE epoch" not in err
    return err


def test_too_few_rows_for_the_mixture_are_refused_before_training(tmp_path, capsys):
    err = _refused_before_training(tmp_path, capsys, "--dataset", "digits", "--latent", "64",
                                   "--limit", "100")
    assert "--latent 64 fits a mixture prior of 64 components" in err and "needs at least 128" in err
    assert "the data has 80" in err and "--latent 40 or less" in err
    np.save(tmp_path / "three.npy", np.random.default_rng(0).standard_normal((3, 4)))
    err = _refused_before_training(tmp_path, capsys, "--dataset", f"npy:{tmp_path / 'three.npy'}")
    assert "needs at least 16 training rows" in err and "the data has 2" in err
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i in range(40):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(folder / f"{i:02d}.png")
    err = _refused_before_training(tmp_path, capsys, "--dataset", f"images:{folder}", "--image-size", "16")
    assert "--latent 128 fits a mixture prior" in err and "the data has 32" in err


# -- item 14: constant data ----------------------------------------------------------------------------------

def test_constant_data_is_refused(tmp_path, capsys):
    np.save(tmp_path / "const.npy", np.full((200, 4), 3.0))
    with pytest.raises(DataError, match="is constant"):
        _load(dataset=f"npy:{tmp_path / 'const.npy'}")
    # constant in float32 (a spread of 1e-30 around 5)
    np.save(tmp_path / "flat.npy", 5 + 1e-30 * np.random.default_rng(0).standard_normal((200, 4)))
    with pytest.raises(DataError, match="is constant"):
        _load(dataset=f"npy:{tmp_path / 'flat.npy'}")
    folder = tmp_path / "same"
    folder.mkdir()
    for i in range(8):
        Image.fromarray(np.full((16, 16, 3), 200, np.uint8)).save(folder / f"{i}.png")
    with pytest.raises(DataError, match="training images of .* is constant"):
        _load(dataset=f"images:{folder}", image_size=16)
    from xvae_fast.train import main
    assert main(["--dataset", f"npy:{tmp_path / 'const.npy'}", "--out", str(tmp_path / "r")]) == 2
    assert "is constant" in capsys.readouterr().err and not (tmp_path / "r").exists()


def test_tiny_but_varying_data_is_standardised_or_refused(tmp_path):
    x = 1e-30 * np.random.default_rng(0).standard_normal((200, 4))
    np.save(tmp_path / "tiny.npy", x)
    b = _load(dataset=f"npy:{tmp_path / 'tiny.npy'}")       # --standardize (the npy default)
    tr = b.train.get_batch(torch.arange(len(b.train)))
    assert torch.allclose(tr.std(0, unbiased=False), torch.ones(4), atol=1e-4)
    with pytest.raises(DataError, match=r"varies by at most .*e-30.*--standardize rescales it"):
        _load(dataset=f"npy:{tmp_path / 'tiny.npy'}", standardize=False)


# -- item 17: float32 overflow, a text file named .npy, --lr inf --------------------------------------------

def test_float64_beyond_float32_is_named_as_such(tmp_path):
    x = np.random.default_rng(0).standard_normal((50, 3))
    x[7, 2] = 1e300
    np.save(tmp_path / "big.npy", x)
    with pytest.raises(DataError, match=r"values up to 1e\+300 .*beyond float32's range") as info:
        _load(dataset=f"npy:{tmp_path / 'big.npy'}")
    assert "NaN" not in str(info.value)


def test_text_file_named_npy_is_named_as_such(tmp_path):
    (tmp_path / "data.npy").write_text("1.0,2.0\n3.0,4.0\n")
    with pytest.raises(DataError, match=r"data.npy': it is not a NumPy .npy or .npz file") as info:
        _load(dataset=f"npy:{tmp_path / 'data.npy'}")
    assert "pickled" not in str(info.value)
    (tmp_path / "empty.npz").write_bytes(b"")
    with pytest.raises(DataError, match="an empty file"):
        _load(dataset=f"npy:{tmp_path / 'empty.npz'}")


@pytest.mark.parametrize("flag,value", [("--lr", "inf"), ("--lr", "nan"), ("--alpha", "inf"),
                                        ("--alphas", "0.5,inf"), ("--grad-clip", "inf"),
                                        ("--em-tol", "nan")])
def test_non_finite_numbers_are_refused(tmp_path, capsys, flag, value):
    from xvae_fast.train import main
    assert main([flag, value, "--out", str(tmp_path / "r")]) == 2
    assert f"{flag} must be a" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
