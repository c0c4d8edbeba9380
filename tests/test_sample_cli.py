"""`python -m xvae_fast.sample`: decoded samples from a trained run as .npy or .png."""
import numpy as np
import pytest
from PIL import Image

from xvae_fast.sample import main, sample_run

from train_utils import TINY_CLUSTERS, TINY_DIGITS, cli, one_thread, train


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("sample_runs")
    digits, clusters = str(root / "digits"), str(root / "clusters")
    assert train(*TINY_DIGITS, "--no-outputs", "--out", digits) == 0
    assert train(*TINY_CLUSTERS, "--no-outputs", "--out", clusters) == 0
    return {"digits": digits, "clusters": clusters}


def test_npy_images_in_unit_range_and_repeatable(runs, tmp_path):
    out = str(tmp_path / "s.npy")
    with one_thread():
        assert main(["--run", runs["digits"], "--n", "10", "--alpha", "1.2", "--out", out]) == 0
    x = np.load(out)
    assert x.shape == (10, 1, 8, 8) and x.min() >= 0 and x.max() <= 1
    with one_thread():
        again, _ = sample_run(runs["digits"], 10, 1.2)
        other, _ = sample_run(runs["digits"], 10, 1.2, seed=1)
        per_row, _ = sample_run(runs["digits"], 10, 1.2, routing="per-row")
        per_coord, _ = sample_run(runs["digits"], 10, 1.2, routing="per-coordinate")
    assert np.array_equal(again.numpy(), x)
    # the default is the run's --routing (per-row by default); the other routing draws otherwise
    assert np.array_equal(per_row.numpy(), x)
    assert not np.array_equal(other.numpy(), x) and not np.array_equal(per_coord.numpy(), x)


def test_png_grid_for_images(runs, tmp_path):
    out = tmp_path / "grid.png"
    with one_thread():
        assert main(["--run", runs["digits"], "--n", "16", "--out", str(out)]) == 0
    with Image.open(out) as im:
        assert im.size[0] > 100 and np.asarray(im.convert("L")).std() > 5


def test_alpha_scales_the_spread_of_vector_samples(runs, tmp_path):
    with one_thread():
        lo, _ = sample_run(runs["clusters"], 2000, 0.3)
        hi, _ = sample_run(runs["clusters"], 2000, 3.0)
    assert lo.shape == (2000, 2)
    # the latent spread grows with alpha, and so does that of the decoded points
    assert hi.std(0).sum() > lo.std(0).sum()


def test_cli_scatter_png_for_2d_data_and_errors(runs, tmp_path):
    out = tmp_path / "scatter.png"
    r = cli("xvae_fast.sample", "--run", runs["clusters"], "--n", "300", "--alpha", "1.2", "--out", out)
    assert r.returncode == 0, r.stderr
    with Image.open(out) as im:
        assert im.size[0] > 200
    r = cli("xvae_fast.sample", "--run", runs["clusters"], "--out", tmp_path / "s.jpg")
    assert r.returncode == 2 and ".npy or .png" in r.stderr
    r = cli("xvae_fast.sample", "--run", tmp_path / "nowhere", "--out", tmp_path / "s.npy")
    assert r.returncode == 2 and "no checkpoint" in r.stderr and "Traceback" not in r.stderr


def test_run_that_has_not_reached_stage_2(tmp_path):
    run = str(tmp_path / "stopped")
    assert train(*TINY_CLUSTERS, "--no-outputs", "--stop-after", "2", "--out", run) == 0
    with one_thread():
        assert main(["--run", run, "--out", str(tmp_path / "s.npy")]) == 2
