"""The 2-D benchmark of paper 001: the four generators, the authors' histogram KL / JSD, the metrics in
summary.json and evaluate, and `python -m xvae_fast.experiments.toy2d` on a tiny budget."""
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from xvae_fast.config import TrainConfig, resolve
from xvae_fast.data import load_dataset
from xvae_fast.data.toy2d import (GAUSS8_CENTRES, GAUSS8_STD, RING_RADII, TOY2D_SIZE, make_toy2d,
                                  reference_points)
from xvae_fast.errors import ConfigError
from xvae_fast.evaluation.histogram import (histogram_kl, histogram_metrics, jsd, jsd_sintro,
                                            mode_coverage)

from train_utils import one_thread, train

TINY = ["--limit", "600", "--batch-size", "64", "--hidden", "16,16", "--no-progress"]


# -- generators ------------------------------------------------------------------------------------
def test_8gaussians_modes_radius_and_spread():
    x, labels = make_toy2d("8gaussians", 40_000, seed=0)
    # the authors' centres: 2 * the unit-circle points, divided by 1.414 (not sqrt 2)
    assert np.allclose(np.linalg.norm(GAUSS8_CENTRES, axis=1), 2 / 1.414, atol=1e-12)
    assert np.allclose(GAUSS8_CENTRES[0], [2 / 1.414, 0]) and np.allclose(GAUSS8_CENTRES[3], [0, -2 / 1.414])
    assert GAUSS8_STD == pytest.approx(0.02 / 1.414)
    shares = np.bincount(labels, minlength=8) / len(labels)
    assert np.all(np.abs(shares - 1 / 8) < 0.01)
    for k in range(8):
        pts = x[labels == k].astype(np.float64)
        assert np.allclose(pts.mean(0), GAUSS8_CENTRES[k], atol=1e-3)
        assert np.allclose(pts.std(0), 0.0141436, rtol=0.05)
    assert x.dtype == np.float32 and x.shape == (40_000, 2)


def test_spirals_checkerboard_rings_shapes():
    x, lab = make_toy2d("2spirals", 20_000, seed=1)
    assert np.bincount(lab).tolist() == [10_000, 10_000]
    # the two arms are point reflections of each other (before the noise): the arm means cancel
    assert np.allclose(x[lab == 0].mean(0), -x[lab == 1].mean(0), atol=0.02)
    r = np.linalg.norm(x, axis=1)
    assert r.max() < (3 * np.pi + 0.5 * math.sqrt(2)) / 3 + 0.5 and r.max() > 2.9
    x, lab = make_toy2d("checkerboard", 20_000, seed=1)
    assert x.min() >= -4 and x.max() < 4
    u = np.floor(x / 2)
    assert np.all((u[:, 0] + u[:, 1]) % 2 == 0)          # only the squares of one parity
    assert np.all(np.abs(np.bincount(lab, minlength=8) / 20_000 - 1 / 8) < 0.015)
    x, lab = make_toy2d("rings", 20_000, seed=1)
    r = np.linalg.norm(x.astype(np.float64), axis=1)
    for k, radius in enumerate(RING_RADII):
        rk = r[lab == k]
        assert abs(rk.mean() - 3 * radius) < 0.01 and abs(rk.std() - 0.08) < 0.01
    assert np.all(np.abs(np.bincount(lab) / 20_000 - 0.25) < 0.02)


def test_generators_are_fixed_by_seed_and_the_bundle_splits_them():
    for name in ("8gaussians", "2spirals", "checkerboard", "rings"):
        a, la = make_toy2d(name, 1000, seed=5)
        b, lb = make_toy2d(name, 1000, seed=5)
        c, _ = make_toy2d(name, 1000, seed=6)
        assert np.array_equal(a, b) and np.array_equal(la, lb) and not np.array_equal(a, c)
    bundle = load_dataset(resolve(TrainConfig(dataset="8gaussians")))
    assert len(bundle.train) == 20_480 and len(bundle.test) == TOY2D_SIZE - 20_480
    assert bundle.info.mean is None and bundle.info.shape == (2,)
    assert bundle.info.extra["toy2d"]["name"] == "8gaussians" and bundle.info.extra["toy2d"]["range"] == 1
    assert "centres" not in bundle.info.extra       # the clusters' block stays the clusters'
    assert bundle.has_labels and int(bundle.train_labels.max()) == 7
    x = bundle.train.get_batch(torch.arange(len(bundle.train))).numpy()
    again = load_dataset(resolve(TrainConfig(dataset="8gaussians")))
    assert np.array_equal(again.train.get_batch(torch.arange(10)).numpy(), x[:10])
    ref = reference_points("8gaussians", 5000, seed=0)
    train_rows = {tuple(row) for row in x.tolist()}
    assert not any(tuple(row) in train_rows for row in ref.tolist())   # fresh draws, not training points
    assert load_dataset(resolve(TrainConfig(dataset="rings"))).info.extra["toy2d"]["range"] == 2


def test_defaults_and_spec_errors():
    cfg = resolve(TrainConfig(dataset="checkerboard", model="vae"))
    assert (cfg.latent, cfg.hidden, cfg.standardize, cfg.likelihood, cfg.threads) == (
        2, [256, 256, 256, 256], False, "gaussian", 1)
    for model in ("vamp", "mog", "gmvae", "hierarchical", "twostage", "uae"):
        resolve(TrainConfig(dataset="2spirals", model=model))
    with pytest.raises(ConfigError, match="takes no path"):
        resolve(TrainConfig(dataset="rings:/tmp"))
    with pytest.raises(ConfigError, match="8gaussians, 2spirals, checkerboard, rings"):
        resolve(TrainConfig(dataset="8gaussian"))


# -- the metric ------------------------------------------------------------------------------------
def _authors(real, fake, r):
    """calculate_sample_kl of athaioan/intro_prior (2D/utils/results.py), with torch as they do."""
    rng = [[-2 * r, 2 * r], [-2 * r, 2 * r]]
    P = torch.tensor(np.histogram2d(real[:, 0], real[:, 1], bins=100, density=True, range=rng)[0])
    Q = torch.tensor(np.histogram2d(fake[:, 0], fake[:, 1], bins=100, density=True, range=rng)[0])
    kl = F.kl_div(torch.log(Q + 1e-14), P, reduction="batchmean").item()
    js = 0.5 * (F.kl_div(torch.log(P + 1e-14), 0.5 * (P + Q), reduction="batchmean")
                + F.kl_div(torch.log(Q + 1e-14), 0.5 * (P + Q), reduction="batchmean")).item()
    return kl, js


def test_metric_equals_the_authors_code():
    for name, r in (("8gaussians", 1.0), ("rings", 2.0), ("2spirals", 2.0)):
        real = reference_points(name, 5000, seed=0)
        fake = make_toy2d(name, 5000, seed=11)[0] * 1.05          # slightly off, not disjoint
        kl, js = _authors(real, fake, r)
        assert histogram_kl(real, fake, r) == pytest.approx(kl, rel=1e-10)
        assert jsd_sintro(real, fake, r) == pytest.approx(js, rel=1e-10)


def test_known_answer_on_hand_built_histograms():
    # bins=2, r=1: four 2x2 cells of area 4 over [-2, 2]^2; densities = count / (n * 4)
    real = np.array([[-1, -1]] * 3 + [[1, 1]], dtype=float)       # P = 3/16, 0, 0, 1/16
    fake = np.array([[-1, -1], [1, 1]], dtype=float)                # Q = 1/8, 0, 0, 1/8
    P, Q = np.array([3 / 16, 1 / 16]), np.array([1 / 8, 1 / 8])
    kl = (P * (np.log(P) - np.log(Q + 1e-14))).sum() / 2           # / rows: 'batchmean'
    assert histogram_kl(real, fake, 1.0, bins=2) == pytest.approx(kl, rel=1e-12)
    M = (P + Q) / 2
    js = 0.5 * ((M * (np.log(M) - np.log(P + 1e-14))).sum() + (M * (np.log(M) - np.log(Q + 1e-14))).sum()) / 2
    assert jsd_sintro(real, fake, 1.0, bins=2) == pytest.approx(js, rel=1e-12)
    p, q = P * 4, Q * 4                                             # probabilities
    m = (p + q) / 2
    assert jsd(real, fake, 1.0, bins=2) == pytest.approx(
        0.5 * (p * np.log(p / m)).sum() + 0.5 * (q * np.log(q / m)).sum(), rel=1e-12)
    # an empty generated cell where the data has mass costs log(1e-14), divided by the rows (2)
    lone = np.array([[1.0, -1.0]])                                  # Q = 1/4 in another cell
    assert histogram_kl(real[:1], lone, 1.0, bins=2) == pytest.approx(
        0.25 * (math.log(0.25) - math.log(1e-14)) / 2, rel=1e-12)
    # the scaling: the same points at 100 bins divide by 100 rows
    assert histogram_kl(real[:1], lone, 1.0) == pytest.approx(
        (1 / 0.0016) * (math.log(1 / 0.0016) - math.log(1e-14)) / 100, rel=1e-12)


def test_identical_samples_zero_and_bounds():
    x = reference_points("checkerboard", 5000, seed=3)
    assert abs(histogram_kl(x, x, 2.0)) < 1e-9 and abs(jsd_sintro(x, x, 2.0)) < 1e-9 and jsd(x, x, 2.0) == 0
    rng = np.random.default_rng(0)
    for _ in range(5):
        a, b = rng.normal(0, rng.uniform(0.2, 1), (2, 800, 2))
        assert histogram_kl(a, b + rng.normal(0, 0.3), 1.0) >= 0
        assert jsd(a, b, 1.0) == pytest.approx(jsd(b, a, 1.0), abs=1e-12) and jsd(a, b, 1.0) <= math.log(2)
    far = x + 100.0
    disjoint = x * 0.01 + np.array([-3.0, 3.0])                     # in the window, an empty square
    assert jsd(x, disjoint, 2.0) == pytest.approx(math.log(2), abs=1e-12)
    assert jsd_sintro(x, disjoint, 2.0) > 10 * math.log(2)         # the reversed "JSD" is unbounded
    m = histogram_metrics(x, far, 2.0)
    assert m["fake_in_window"] == 0 and m["jsd"] == pytest.approx(math.log(2))
    assert m["hist_kl"] > 20 and np.isfinite(m["jsd_sintro"])


def test_mode_dropping_scores_clearly_worse():
    real = reference_points("8gaussians", 5000, seed=0)
    full = make_toy2d("8gaussians", 5000, seed=21)[0]
    x, lab = make_toy2d("8gaussians", 6000, seed=22)
    seven = x[lab != 0][:5000]                                      # mode 0 dropped
    good, bad = histogram_metrics(real, full, 1.0), histogram_metrics(real, seven, 1.0)
    assert good["hist_kl"] < 1.5 and bad["hist_kl"] > 15
    assert bad["jsd"] > 3 * good["jsd"] and bad["jsd_sintro"] > 3 * good["jsd_sintro"]
    cov_full = mode_coverage(full, GAUSS8_CENTRES, GAUSS8_STD)
    cov_seven = mode_coverage(seven, GAUSS8_CENTRES, GAUSS8_STD)
    assert cov_full["modes_covered"] == 8 and cov_seven["modes_covered"] == 7
    assert cov_seven["mode_shares"][0] == 0
    assert cov_full["in_modes"] == pytest.approx(1 - math.exp(-4.5), abs=0.01)   # 3 std of a 2-D Gaussian


# -- wired into training, evaluate and the runner ----------------------------------------------------
def test_train_writes_histogram_metrics_and_evaluate_reports_them(tmp_path):
    run = tmp_path / "run"
    assert train("--dataset", "8gaussians", "--model", "vae", "--epochs-vae", "1", "--out", run, *TINY) == 0
    s = json.loads((run / "summary.json").read_text())
    t = s["toy2d"]
    assert t["dataset"] == "8gaussians" and t["n_fake"] == t["n_real"] == 5000 and t["range"] == 1
    assert t["hist_kl"] > 0 and 0 <= t["jsd"] <= math.log(2) + 1e-12 and np.isfinite(t["jsd_sintro"])
    assert 0 <= t["modes_covered"] <= 8 and len(t["mode_shares"]) == 8 and t["in_modes_real"] > 0.97
    assert "clusters" not in s
    from xvae_fast.evaluation.headline import headline_metrics
    from xvae_fast.evaluation.runner import EvalOptions, evaluate_run
    rep = evaluate_run(str(run), EvalOptions(metrics="rec", alphas=[], figures=False, progress=False))
    h = headline_metrics(rep)
    assert {"hist_kl", "jsd_sintro", "jsd", "modes_covered", "in_modes"} <= set(h)
    assert rep["metrics"]["toy2d"]["n_fake"] == 5000 and "modes" not in rep["metrics"]


def test_default_xvae_trains_on_a_2d_set(tmp_path):
    run = tmp_path / "x"
    assert train("--dataset", "rings", "--epochs-ae", "1", "--epochs-vae", "1", "--em-n-init", "1",
                 "--out", run, *TINY) == 0
    t = json.loads((run / "summary.json").read_text())["toy2d"]
    assert t["range"] == 2 and "modes_covered" not in t and t["hist_kl"] > 0


def _runner(*args) -> int:
    from xvae_fast.experiments.toy2d import main
    with one_thread():
        return main([str(a) for a in args])


def test_toy2d_runner_tiny_budget(tmp_path):
    out = tmp_path / "bench"
    args = ["--models", "vae", "--seeds", "1", "--datasets", "8gaussians", "--out", out, "--steps", "8",
            "--quiet", *TINY]
    assert _runner(*args) == 0
    res = json.loads((out / "results.json").read_text())
    rec = res["records"]["8gaussians/1/vae"]
    assert rec["status"] == "new" and rec["steps"] == 8 and rec["metrics"]["hist_kl"] > 0
    assert res["table"]["8gaussians"]["vae"]["hist_kl"] == [rec["metrics"]["hist_kl"]]
    md = (out / "results.md").read_text()
    assert "| dataset | vae |" in md and "| 8gaussians | 1 | vae |" in md and "Histogram KL" in md
    assert (out / "scatter_8gaussians_vae.png").stat().st_size > 1000
    assert _runner(*args) == 0                                       # reused, not retrained
    assert json.loads((out / "results.json").read_text())["records"]["8gaussians/1/vae"]["status"] == "done"


def test_toy2d_runner_bad_input_exits_2(tmp_path, capsys):
    from xvae_fast.experiments.toy2d import MODELS
    assert {"vae", "xvae", "vamp", "mog"} <= set(MODELS)
    for args, msg in ((["--models", "vae,nope"], "'nope'"), (["--datasets", "8gaussians,clusters"], "'clusters'"),
                      (["--seeds", "a"], "--seeds"), (["--steps", "0"], "--steps"),
                      (["--models", ""], "--models"), (["--dataset", "clusters"], "use --datasets")):
        assert _runner(*args, "--out", tmp_path / "y") == 2, args
        assert msg in capsys.readouterr().err, args
    assert not (tmp_path / "y").exists()
