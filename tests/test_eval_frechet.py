"""The Fréchet distance, its statistics files, the Inception Score and precision / recall, checked
against direct computations (scipy, closed forms) on known inputs."""
import numpy as np
import pytest
from scipy import linalg

from xvae_fast.errors import DataError
from xvae_fast.evaluation import (frechet_distance, frechet_distance_from_features, gaussian_stats,
                                  inception_score, load_stats, precision_recall, save_stats)


def random_spd(d, rng):
    a = rng.standard_normal((d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


def direct_fd(mu1, s1, mu2, s2):
    """The Fréchet (2-Wasserstein) distance through the symmetric form tr((s1^½ s2 s1^½)^½)."""
    r1 = linalg.sqrtm(s1).real
    cross = linalg.sqrtm(r1 @ s2 @ r1).real
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(cross))


@pytest.mark.parametrize("d", [1, 3, 16])
def test_matches_a_direct_scipy_computation_on_known_gaussians(d):
    rng = np.random.default_rng(d)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    s1, s2 = random_spd(d, rng), random_spd(d, rng)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(direct_fd(mu1, s1, mu2, s2), rel=1e-9, abs=1e-9)


def test_closed_form_for_diagonal_covariances_and_symmetry():
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.0])
    v1, v2 = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(v1) - np.sqrt(v2)) ** 2)   # 5 + 4 + 1 + 0
    got = frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2))
    assert expected == pytest.approx(10.0)
    assert got == pytest.approx(expected, abs=1e-12)
    assert frechet_distance(mu2, np.diag(v2), mu1, np.diag(v1)) == pytest.approx(got, abs=1e-12)
    # scalars, as pytorch-fid accepts (np.atleast_1d / atleast_2d)
    assert frechet_distance(0.0, 1.0, 3.0, 4.0) == pytest.approx(9.0 + 1.0)


def test_a_set_against_itself_is_zero_and_noise_increases_it():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1500, 8)) @ rng.standard_normal((8, 8)) + 2.0
    assert abs(frechet_distance_from_features(x, x)) < 1e-8
    noisy = [frechet_distance_from_features(x, x + s * rng.standard_normal(x.shape)) for s in (0.1, 0.5, 1.0, 2.0)]
    assert noisy[0] > 1e-4
    assert all(a < b for a, b in zip(noisy, noisy[1:])), noisy


def test_gaussian_stats_are_mean_and_unbiased_covariance():
    x = np.array([[1.0, 2.0], [3.0, 0.0], [5.0, 4.0]])
    mu, sigma = gaussian_stats(x)
    assert np.allclose(mu, [3.0, 2.0])
    assert np.allclose(sigma, [[4.0, 2.0], [2.0, 4.0]])        # divides by N - 1
    with pytest.raises(ValueError, match="at least 2"):
        gaussian_stats(x[:1])


def test_singular_covariances_need_no_eps_offset():
    # a rank-one covariance: Tr (S1 S2)^(1/2) = sqrt(1' S1 1), exactly, with no diagonal offset
    rng = np.random.default_rng(3)
    s1, one = random_spd(4, rng), np.ones(4)
    got = frechet_distance(np.zeros(4), s1, np.zeros(4), np.outer(one, one))
    assert got == pytest.approx(np.trace(s1) + 4 - 2 * np.sqrt(one @ s1 @ one), rel=1e-12)


def test_a_matrix_that_is_not_a_covariance_is_an_error():
    with pytest.raises(DataError, match="covariance 1 is not a covariance"):
        frechet_distance(np.zeros(2), -np.eye(2), np.zeros(2), np.eye(2))
    with pytest.raises(DataError, match="not symmetric"):     # a nilpotent: no square root at all
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), np.array([[0.0, 1.0], [0.0, 0.0]]))


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="different lengths"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))


def test_stats_files_are_pytorch_fid_npz(tmp_path):
    rng = np.random.default_rng(1)
    mu, sigma = rng.standard_normal(4), random_spd(4, rng)
    ours = str(tmp_path / "ours.npz")
    save_stats(ours, mu, sigma)
    with np.load(ours) as f:                         # how pytorch-fid reads a .npz
        assert set(f.keys()) == {"mu", "sigma"}
        assert np.array_equal(f["mu"][:], mu) and np.array_equal(f["sigma"][:], sigma)
    theirs = str(tmp_path / "theirs.npz")
    np.savez_compressed(theirs, mu=mu, sigma=sigma)  # how pytorch-fid --save-stats writes one
    m2, s2 = load_stats(theirs, dims=4)
    assert np.array_equal(m2, mu) and np.array_equal(s2, sigma)
    with pytest.raises(DataError, match="4-d statistics"):
        load_stats(theirs, dims=2048)
    bad = str(tmp_path / "bad.npz")
    np.savez(bad, mean=mu)
    with pytest.raises(DataError, match="'mu' and 'sigma'"):
        load_stats(bad)
    with pytest.raises(DataError, match="does not exist"):
        load_stats(str(tmp_path / "missing.npz"))
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="could not read"):
        load_stats(str(tmp_path / "junk.npz"))
    with pytest.raises(DataError, match=".npz"):
        save_stats(str(tmp_path / "stats.txt"), mu, sigma)


# -- Inception Score ---------------------------------------------------------------------------
def test_inception_score_of_uniform_logits_is_one():
    mean, std = inception_score(np.zeros((100, 1008)), splits=10)
    assert mean == pytest.approx(1.0, abs=1e-12) and std == pytest.approx(0.0, abs=1e-12)
    mean, _ = inception_score(np.full((30, 5), 7.5), splits=3)   # any constant logits
    assert mean == pytest.approx(1.0, abs=1e-12)


def test_inception_score_counts_confident_distinct_classes():
    classes, n = 10, 200
    logits = np.full((n, classes), -60.0)
    logits[np.arange(n), np.arange(n) % classes] = 60.0          # confident, evenly spread
    mean, std = inception_score(logits, splits=10)
    assert mean == pytest.approx(classes, rel=1e-6) and std < 1e-6
    collapsed = np.full((n, classes), -60.0)
    collapsed[:, 3] = 60.0                                        # confident, one class only
    assert inception_score(collapsed, splits=10)[0] == pytest.approx(1.0, abs=1e-6)
    # in between: a known value. Half the samples say class 0, half class 1, each with p = 0.75
    p = np.array([[0.75, 0.25], [0.25, 0.75]] * 50)
    kl = 0.75 * np.log(0.75 / 0.5) + 0.25 * np.log(0.25 / 0.5)
    assert inception_score(np.log(p), splits=1)[0] == pytest.approx(np.exp(kl), rel=1e-12)


def test_inception_score_errors():
    with pytest.raises(ValueError, match="at least 10 samples"):
        inception_score(np.zeros((5, 3)), splits=10)
    with pytest.raises(ValueError, match="NaN"):
        inception_score(np.full((10, 3), np.nan), splits=1)


# -- precision / recall ------------------------------------------------------------------------
def test_precision_recall_identical_disjoint_and_collapsed_sets():
    rng = np.random.default_rng(0)
    real = rng.standard_normal((400, 3))
    assert precision_recall(real, real, k=3) == {"precision": 1.0, "recall": 1.0}
    far = precision_recall(real, real + 100.0, k=3)
    assert far == {"precision": 0.0, "recall": 0.0}
    # mode collapse: samples all near one real point are faithful (precision 1) but cover little
    collapsed = real[:1] + 0.01 * rng.standard_normal((400, 3))
    pr = precision_recall(real, collapsed, k=3)
    assert pr["precision"] == 1.0 and pr["recall"] < 0.05
    # overdispersed samples cover the real data but many fall outside it
    wide = 4.0 * rng.standard_normal((400, 3))
    pr = precision_recall(real, wide, k=3)
    assert pr["recall"] > 0.9 and pr["precision"] < 0.5


def test_precision_recall_by_hand_in_one_dimension():
    real = np.array([[0.0], [1.0], [2.0], [3.0]])      # k = 1 radii: 1, 1, 1, 1
    fake = np.array([[0.5], [3.9], [10.0]])             # k = 1 radii: 3.4, 3.4, 6.1
    pr = precision_recall(real, fake, k=1)
    assert pr["precision"] == pytest.approx(2 / 3)       # 0.5 and 3.9 are within 1 of a real point
    assert pr["recall"] == pytest.approx(1.0)           # every real point is within 3.4 of 0.5 or 3.9
    with pytest.raises(ValueError, match="need more than"):
        precision_recall(real[:2], fake, k=3)
