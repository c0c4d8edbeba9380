"""Short end-to-end runs of `python -m xvae_fast.train`: every configuration, the standard VAE, the
default digits pipeline with all its outputs, and bf16 autocast."""
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

import xvae_fast as xf
from xvae_fast.ops.plans import PRESETS
from xvae_fast.training import load_run

from train_utils import TINY_CLUSTERS, TINY_DIGITS, load_ck, train

RUN_FILES = ["checkpoint.pt", "config.yaml", "metrics.csv", "metrics.json", "curves.png",
             "reconstructions.png", "samples.png", "alpha_sweep.png", "samples.npy", "summary.json",
             "prior_fit.json", "train.log"]


def summary(run):
    with open(os.path.join(run, "summary.json")) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def stage1(tmp_path_factory):
    """A complete tiny X-VAE (full) run on the clusters, whose autoencoder the other runs reuse."""
    run = str(tmp_path_factory.mktemp("runs") / "full")
    assert train(*TINY_CLUSTERS, "--plan", "full", "--out", run) == 0
    return run


def test_full_run_on_clusters_writes_everything(stage1):
    for name in RUN_FILES + ["samples_per_coordinate.png", "samples_expost.png"]:
        assert os.path.isfile(os.path.join(stage1, name)), name
    s = summary(stage1)
    assert s["plan"] == "full" and s["latent"] == 3
    assert s["ops"] == ("fused" if xf.extension_available() else "reference")
    for k in ("loss", "recon", "kl", "kl_cat", "kl_gauss"):
        assert np.isfinite(s["test"][k])
    assert s["test"]["loss"] == pytest.approx(s["test"]["recon"] + s["test"]["kl"], rel=1e-6)
    assert s["prior_fit"]["kind"] == "mixture" and s["prior_fit"]["components"] == 3
    c = s["clusters"]
    assert 0.9 < c["within_3std_data"] <= 1.0
    assert set(c["within_3std_samples"]) == {"per-coordinate", "per-row", "expost"}
    samples = np.load(os.path.join(stage1, "samples.npy"))
    assert samples.shape == (c["n_samples"], 2) and np.isfinite(samples).all()
    with open(os.path.join(stage1, "metrics.csv")) as f:
        rows = f.read().strip().splitlines()
    assert rows[0].startswith("stage,epoch,step") and len(rows) == 1 + 2 + 2  # header, 2 AE, 2 VAE
    ck = load_ck(stage1)
    assert ck["stage"] == "done" and ck["step"] == 20  # 2 + 2 epochs of 5 steps
    assert ck["prior"]["means"].shape == (3, 3)


CONFIGS = ["single"] + [p for p in PRESETS if p != "full"] + ["custom", "vae"]


@pytest.mark.parametrize("config", CONFIGS)
def test_each_configuration_trains(stage1, tmp_path, config):
    run = str(tmp_path / "run")
    args = list(TINY_CLUSTERS) + ["--out", run, "--no-outputs"]
    if config == "vae":
        args += ["--model", "vae"]
    else:
        args += ["--stage1-from", stage1]
        if config == "custom":
            plan = xf.Plan([xf.CoordinatePlan("home", "none", "prior", "transport"),
                            xf.CoordinatePlan("prior", "none", "prior", "transport"),
                            xf.CoordinatePlan("posterior", "none", "posterior", "direct")], name="mine")
            path = tmp_path / "plan.json"
            path.write_text(json.dumps(plan.to_dict()))
            args += ["--plan", str(path)]
        else:
            args += ["--plan", config]
    assert train(*args) == 0
    s = summary(run)
    ck = load_ck(run)
    vae_rows = [r for r in ck["history"] if r["stage"] == "vae"]
    assert len(vae_rows) == 2
    for r in vae_rows:
        for k in ("train_loss", "train_recon", "train_kl", "test_loss", "test_recon", "test_kl"):
            assert np.isfinite(r[k]), (k, r)
    if config == "vae":
        # no stage 1, the N(0, I) prior, analytic KL with no categorical part
        assert not any(r["stage"] == "ae" for r in ck["history"]) and ck["models"]["ae"] is None
        assert torch.equal(ck["prior"]["means"], torch.zeros(1, 3))
        assert torch.equal(ck["prior"]["stds"], torch.ones(1, 3))
        assert all(r["train_kl_cat"] == 0 for r in vae_rows) and s["plan"] == "standard"
    elif config == "single":
        assert ck["prior"]["means"].shape == (1, 3) and s["prior_fit"]["kind"] == "single"
        assert all(r["train_kl_cat"] == 0 for r in vae_rows)
    else:
        assert ck["prior"]["means"].shape == (3, 3)
        assert all(r["train_kl_cat"] > 0 for r in vae_rows)  # the categorical KL is logged apart
        assert s["plan"] == ("mine" if config == "custom" else config)
        # stage 1 was reused: the autoencoder weights are the source run's
        src = load_ck(stage1)["models"]["ae"]
        assert all(torch.equal(src[k], v) for k, v in ck["models"]["ae"].items())
    # the trained model decodes samples
    _, _, vae, _ = load_run(run)
    x = vae.generate(5, 1.0)
    assert x.shape == (5, 2) and torch.isfinite(x).all()


def test_default_digits_pipeline_outputs(tmp_path):
    """The default dataset and model (X-VAE with the library defaults on digits), cut short, writes
    every output."""
    run = str(tmp_path / "digits")
    assert train(*TINY_DIGITS, "--epochs-ae", "3", "--out", run) == 0
    for name in RUN_FILES + ["samples_per_coordinate.png", "samples_expost.png"]:
        assert os.path.isfile(os.path.join(run, name)), name
    for png in ("curves.png", "reconstructions.png", "samples.png", "alpha_sweep.png"):
        with Image.open(os.path.join(run, png)) as im:
            assert im.size[0] > 100 and im.size[1] > 50
            assert np.asarray(im.convert("L")).std() > 5  # not a blank canvas
    samples = np.load(os.path.join(run, "samples.npy"))
    assert samples.shape == (64, 1, 8, 8) and samples.min() >= 0 and samples.max() <= 1
    ck = load_ck(run)
    ae_rows = [r for r in ck["history"] if r["stage"] == "ae"]
    assert ae_rows[-1]["train_recon"] < ae_rows[0]["train_recon"]  # stage 1 learns
    s = summary(run)
    assert s["dataset"] == "digits" and s["model"] == "xvae" and s["plan"] == "matched"
    assert (s["kl_objective"], s["stage2_init"], s["routing"], s["likelihood"]) == (
        "tight", "ae", "per-row", "bernoulli")
    assert set(s["ae"]) == {"train_recon", "test_recon"}


def test_bf16_autocast_run(stage1, tmp_path):
    run = str(tmp_path / "bf16")
    assert train(*TINY_CLUSTERS, "--stage1-from", stage1, "--amp", "bf16", "--no-outputs",
                 "--out", run) == 0
    s = summary(run)
    assert all(np.isfinite(s["test"][k]) for k in ("loss", "recon", "kl"))
    assert load_ck(run)["config"]["precision"] == "bf16"          # --amp is the old name
    assert s["precision"] == "bf16"


def test_runs_are_repeatable_with_a_seed(stage1, tmp_path):
    a, b, c = (str(tmp_path / n) for n in "abc")
    common = list(TINY_CLUSTERS) + ["--stage1-from", stage1, "--plan", "interleaved", "--no-outputs"]
    assert train(*common, "--out", a) == 0
    assert train(*common, "--out", b) == 0
    assert train(*common, "--out", c, "--seed", "7") == 0
    wa, wb, wc = (load_ck(r)["models"]["vae"] for r in (a, b, c))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)
