"""`python -m xvae_fast.evaluate` on tiny trained runs: the offline metrics and the alpha sweep with
their files, repeatability and the classifier cache, the Inception metrics with saved weights and
statistics files, vector data, and the errors."""
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from xvae_fast.evaluate import main

from train_utils import TINY_CLUSTERS, TINY_DIGITS, cli, one_thread, train

FAST = ["--classifier-steps", "150", "--n-fake", "200", "--no-progress"]


def evaluate(*args) -> int:
    with one_thread():
        return main([str(a) for a in args])


def read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    run = str(tmp_path_factory.mktemp("eval_runs") / "digits")
    # squared-error likelihood: the trainer's recon term is then in Rec's units (compared below)
    assert train(*TINY_DIGITS, "--likelihood", "mse", "--no-outputs", "--out", run) == 0
    return run


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("classifier_cache"))


@pytest.fixture(scope="module")
def default_eval(digits_run, cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval_default")
    assert evaluate("--run", digits_run, "--out", out, "--cache-dir", cache,
                    "--alpha", "0.5,1,2", *FAST) == 0
    return out, read_json(out / "eval.json")


def test_offline_metrics_and_the_alpha_sweep(default_eval, digits_run):
    out, rep = default_eval
    m = rep["metrics"]
    assert set(m) == {"rec", "fd_lenet", "pr_lenet"}
    # Rec: the test reconstruction error, the quantity the trainer reports as the test recon term
    trainer_recon = read_json(os.path.join(digits_run, "summary.json"))["test"]["recon"]
    assert m["rec"]["n"] == 32 and m["rec"]["value"] == pytest.approx(trainer_recon, rel=0.15)
    fd = m["fd_lenet"]
    assert "not Inception FID" in fd["description"]
    assert np.isfinite(fd["samples"]["value"]) and fd["samples"]["value"] > 0
    assert np.isfinite(fd["recon"]["value"]) and fd["recon"]["value"] > 0
    # the protocol is recorded next to every number
    for entry in (m["rec"], fd, m["pr_lenet"]):
        assert "protocol" in entry
    assert fd["protocol"]["n_fake"] == 200 and fd["protocol"]["n_real_used"] == 32
    assert fd["samples"]["n_real"] == 32 and fd["samples"]["alpha"] == 1.0
    assert rep["protocol"]["batch_size"] == 50 and rep["protocol"]["gen_batch_size"] == 128
    assert any("fewer than --n-real 1000" in n for n in rep["notes"])
    pr = m["pr_lenet"]
    assert 0 <= pr["precision"] <= 1 and 0 <= pr["recall"] <= 1 and pr["k"] == 3
    net = rep["feature_nets"]["lenet"]
    assert net["test_accuracy"] > 0.5 and net["cached"] is False and net["steps"] == 150
    # the sweep: a value per alpha, the headline alpha's equal to the sweep's, not a flat line
    sw = rep["sweep"]
    assert sw["alphas"] == [0.5, 1.0, 2.0]
    values = sw["values"]["fd_lenet"]
    assert len(values) == 3 and all(np.isfinite(values))
    assert len({round(v, 6) for v in values}) == 3
    assert values[1] == fd["samples"]["value"]
    assert len(sw["values"]["pr_lenet"]["precision"]) == 3


def test_files_markdown_plot_and_grids(default_eval):
    out, rep = default_eval
    md = (out / "eval.md").read_text(encoding="utf-8")
    assert "| Rec↓ | FD-LeNet samples↓ | FD-LeNet recon↓ |" in md
    assert "## Alpha sweep" in md and "| 0.5 |" in md and "| 2 |" in md
    assert "not Inception FID" in md and "n_real_used" in md
    # how the evaluated run was trained, from its summary.json
    assert rep["training_provenance"]["world_size"] == 1
    assert "Trained with: 1 process on cpu" in md and "fp32; torch " in md
    for name in ["eval_alpha_sweep.png", "eval_alpha_grid.png", "eval_samples_alpha_0.5.png",
                 "eval_samples_alpha_1.png", "eval_samples_alpha_2.png"]:
        assert rep["files"] and os.path.isfile(out / name), name
        with Image.open(out / name) as im:
            assert im.size[0] > 150 and np.asarray(im.convert("L")).std() > 5, name
    assert rep["files"]["sweep_plot"] == "eval_alpha_sweep.png"


def test_repeatable_with_the_cached_classifier(default_eval, digits_run, cache, tmp_path, capsys):
    _, first = default_eval
    assert evaluate("--run", digits_run, "--out", tmp_path, "--cache-dir", cache, "--alpha", "1",
                    "--no-figures", *FAST) == 0
    again = read_json(tmp_path / "eval.json")
    assert again["feature_nets"]["lenet"]["cached"] is True
    assert (again["feature_nets"]["lenet"]["weights_sha256_16"]
            == first["feature_nets"]["lenet"]["weights_sha256_16"])
    for key in ("rec", ):
        assert again["metrics"][key]["value"] == first["metrics"][key]["value"]
    assert again["metrics"]["fd_lenet"]["samples"]["value"] == first["metrics"]["fd_lenet"]["samples"]["value"]
    assert again["metrics"]["fd_lenet"]["recon"]["value"] == first["metrics"]["fd_lenet"]["recon"]["value"]
    assert not os.path.exists(tmp_path / "eval_alpha_sweep.png")
    stdout = capsys.readouterr().out
    assert "| Rec↓ |" in stdout and "eval.json" in stdout


def test_png_protocol_round_trips_the_images(default_eval, digits_run, cache, tmp_path):
    _, plain = default_eval
    assert evaluate("--run", digits_run, "--out", tmp_path, "--cache-dir", cache, "--png-protocol",
                    "--metrics", "fd", "--alpha", "none", "--no-figures", *FAST) == 0
    rep = read_json(tmp_path / "eval.json")
    assert rep["protocol"]["png"] is True and rep["metrics"]["fd_lenet"]["protocol"]["png"] is True
    real = sorted(os.listdir(tmp_path / "eval_png" / "real"))
    assert len(real) == 32 and len(os.listdir(tmp_path / "eval_png" / "samples_alpha_1")) == 200
    assert len(os.listdir(tmp_path / "eval_png" / "recon")) == 32
    with Image.open(tmp_path / "eval_png" / "real" / real[0]) as im:
        assert im.mode == "L" and im.size == (8, 8)
    # 8-bit quantisation moves the distance a little, not much
    a, b = rep["metrics"]["fd_lenet"]["samples"]["value"], plain["metrics"]["fd_lenet"]["samples"]["value"]
    assert a == pytest.approx(b, rel=0.05)


@pytest.fixture(scope="module")
def inception_weights(tmp_path_factory):
    from xvae_fast.evaluation import FIDInceptionV3
    torch.manual_seed(0)
    path = str(tmp_path_factory.mktemp("inception") / "random_inception.pth")
    torch.save(FIDInceptionV3().state_dict(), path)
    return path


def test_inception_metrics_with_saved_weights_and_statistics(digits_run, inception_weights, tmp_path):
    small = ["--inception-weights", inception_weights, "--inception-size", "75", "--fid-dims", "64",
             "--n-real", "10", "--n-fake", "10", "--is-splits", "2", "--alpha", "none",
             "--no-figures", "--no-progress"]
    stats = tmp_path / "real_stats.npz"
    assert evaluate("--run", digits_run, "--out", tmp_path / "a", "--metrics", "rec,inception",
                    "--fid-stats-out", stats, *small) == 0
    rep = read_json(tmp_path / "a" / "eval.json")
    m = rep["metrics"]
    assert set(m) == {"rec", "fid", "is"}
    assert m["fid"]["samples"]["value"] > 0 and m["fid"]["recon"]["value"] > 0
    assert m["fid"]["protocol"]["fid_dims"] == 64 and m["fid"]["protocol"]["inception_size"] == 75
    assert 1.0 - 1e-9 <= m["is"]["mean"] <= 1008 and m["is"]["splits"] == 2 and "real" in m["is"]
    assert rep["feature_nets"]["inception"]["weights"] == inception_weights
    assert any("not comparable with published FIDs" in n for n in rep["notes"])
    assert rep["protocol"]["paper_default"] is False
    with np.load(stats) as f:
        assert f["mu"].shape == (64,) and f["sigma"].shape == (64, 64)
    # the saved real statistics, read back: the same FID of the same samples
    assert evaluate("--run", digits_run, "--out", tmp_path / "b", "--metrics", "fid",
                    "--fid-stats-in", stats, *small) == 0
    rep2 = read_json(tmp_path / "b" / "eval.json")
    assert rep2["metrics"]["fid"]["samples"]["value"] == pytest.approx(m["fid"]["samples"]["value"], rel=1e-9)
    assert rep2["feature_nets"]["inception"]["real_stats"] == str(stats)


def test_vector_data_uses_an_mlp_classifier(tmp_path, cache):
    run = str(tmp_path / "clusters")
    assert train(*TINY_CLUSTERS, "--no-outputs", "--out", run) == 0
    assert evaluate("--run", run, "--cache-dir", cache, "--alpha", "0.5,2", "--classifier-steps", "100",
                    "--n-fake", "300", "--no-progress") == 0
    rep = read_json(os.path.join(run, "eval.json"))
    assert set(rep["metrics"]) == {"rec", "fd_mlp", "pr_mlp", "modes"}   # clusters: in-mode shares
    assert rep["feature_nets"]["mlp"]["test_accuracy"] > 0.9
    v = rep["sweep"]["values"]["fd_mlp"]
    assert v[0] != v[1] and os.path.isfile(os.path.join(run, "eval_alpha_grid.png"))
    with one_thread():
        assert main(["--run", run, "--metrics", "fid", "--no-progress"]) == 2


def test_errors_name_the_argument(digits_run, tmp_path, capsys):
    cases = [(["--alpha", "0.5,abc"], "--alpha"), (["--alpha", "0.5,-1"], "--alpha"),
             (["--metrics", "rec,fidd"], "--metrics"), (["--n-fake", "1"], "--n-fake"),
             (["--sample-alpha", "nan"], "--sample-alpha"),
             (["--fid-stats-out", str(tmp_path / "s.npz")], "--fid-stats"),
             (["--png-protocol", "--metrics", "rec", "--fid-stats-in", "x.npz"], "--fid-stats")]
    for args, needle in cases:
        assert evaluate("--run", digits_run, "--out", tmp_path, *args) == 2, args
        err = capsys.readouterr().err
        assert err.startswith("error: ") and needle in err, (args, err)
    assert evaluate("--run", tmp_path / "nowhere") == 2
    assert "--run" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "eval.json")


def test_missing_inception_weights_offline_exit_2_with_the_ways_to_provide_them(digits_run, tmp_path,
                                                                             monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))
    r = cli("xvae_fast.evaluate", "--run", digits_run, "--out", tmp_path, "--metrics", "fid",
            "--no-download", "--no-progress")
    assert r.returncode == 2 and r.stderr.startswith("error: ")
    assert "Traceback" not in r.stderr
    for needle in ("--inception-weights", os.path.join(str(tmp_path / "empty_torch_home"), "hub",
                   "checkpoints", "pt_inception-2015-12-05-6726825d.pth"), "network access"):
        assert needle in r.stderr, r.stderr
