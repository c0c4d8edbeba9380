"""Real MNIST (the shared IDX files, in slices to keep the suite fast): the loader, and the paper's
setup (`--preset paper`: squared error summed per image, Adam 1e-3, batch 128, seed 42), whose
stage-1 autoencoder must learn: with the pixel mean behind a sigmoid it saturates to all black in its
first steps and never recovers (the cause; models/likelihood.py), with the linear mean it trains."""
import hashlib
import json
import os

import numpy as np
import pytest
import torch

from xvae_fast.data.mnist import find_file, read_idx
from xvae_fast.config import TrainConfig
from xvae_fast.data import load_dataset

from train_utils import train

# ../shared/data/README.md: SHA-256 of the uncompressed training images
TRAIN_SHA256 = "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"
CLASS_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


def test_the_loader_reads_the_shared_files_exactly(mnist_dir):
    import gzip
    with gzip.open(os.path.join(mnist_dir, "train-images-idx3-ubyte.gz"), "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == TRAIN_SHA256
    labels = read_idx(find_file(mnist_dir, "train-labels-idx1-ubyte"))
    assert np.bincount(labels, minlength=10).tolist() == CLASS_COUNTS
    b = load_dataset(TrainConfig(dataset=f"mnist:{mnist_dir}", limit=1000))
    assert len(b.train) == 1000 and len(b.test) >= 100 and b.info.shape == (1, 28, 28)
    x = b.train.get_batch(torch.arange(1000))
    assert x.dtype == torch.float32 and float(x.min()) == 0.0 and float(x.max()) == 1.0
    raw = read_idx(find_file(mnist_dir, "train-images-idx3-ubyte"))[:1000]
    torch.testing.assert_close(x[:, 0], torch.from_numpy(raw.astype(np.float32)) / 255)
    assert b.train_labels is not None and b.train_labels[:1000].tolist() == labels[:1000].tolist()


def _stage1_test_recon(run):
    with open(os.path.join(run, "metrics.json")) as f:
        return [r for r in json.load(f) if r["stage"] == "ae"][-1]["test_recon"]


@pytest.fixture(scope="module")
def all_black(mnist_dir):
    """The squared error of an all-black reconstruction: sum of squared pixels, mean over the test
    slice the runs below evaluate on."""
    b = load_dataset(TrainConfig(dataset=f"mnist:{mnist_dir}", limit=6400))
    x = b.test.get_batch(torch.arange(len(b.test)))
    return float(x.pow(2).flatten(1).sum(1).mean())


def test_the_paper_preset_autoencoder_learns_on_mnist_with_seed_42(tmp_path, mnist_dir, all_black):
    """50 steps of the paper's stage 1 (seed 42, MNIST): the linear pixel mean (the default for mse)
    takes the squared error far below the all-black value; the config records the choice."""
    run = str(tmp_path / "paper")
    assert train("--preset", "paper", "--dataset", f"mnist:{mnist_dir}", "--limit", "6400",
                 "--epochs-ae", "1", "--epochs-vae", "0", "--seed", "42", "--no-outputs", "--no-progress",
                 "--out", run) == 0
    assert _stage1_test_recon(run) < 0.6 * all_black
    with open(os.path.join(run, "summary.json")) as f:
        assert json.load(f)["likelihood"] == "mse"
    with open(os.path.join(run, "config.yaml")) as f:
        assert "image_output: linear" in f.read()


def test_the_sigmoid_mean_under_a_squared_error_dies_at_seed_42(tmp_path, mnist_dir, all_black):
    """The cause, kept selectable (--image-output sigmoid, what runs before the fix used): the same
    run's autoencoder outputs black (its error is the all-black value) and stays there."""
    run = str(tmp_path / "sigmoid")
    assert train("--preset", "paper", "--dataset", f"mnist:{mnist_dir}", "--limit", "6400",
                 "--epochs-ae", "1", "--epochs-vae", "0", "--seed", "42", "--image-output", "sigmoid",
                 "--no-outputs", "--no-progress", "--out", run) == 0
    assert _stage1_test_recon(run) > 0.97 * all_black


def test_image_output_defaults_and_refusals():
    from xvae_fast.config import resolve
    from xvae_fast.errors import ConfigError
    r = lambda **kw: resolve(TrainConfig(**kw))  # noqa: E731
    assert r(preset="paper").image_output == "linear"                       # mse, X-VAE
    assert r(model="vamp", likelihood="mse").image_output == "linear"      # a baseline
    assert r(likelihood="gaussian").image_output == "sigmoid"
    assert r(model="uae").image_output == "sigmoid"                        # fixes its own likelihood
    assert r().image_output is None                                        # bernoulli
    assert r(dataset="clusters", likelihood="mse").image_output is None    # vectors
    assert r(preset="paper", image_output="sigmoid").image_output == "sigmoid"
    with pytest.raises(ConfigError, match="bernoulli always"):
        r(image_output="linear")
    with pytest.raises(ConfigError, match="vector data"):
        r(dataset="clusters", likelihood="mse", image_output="linear")
    with pytest.raises(ConfigError, match="--image-output must be one of"):
        r(preset="paper", image_output="tanh")
    # checkpoints from before the option keep the sigmoid they trained with
    assert TrainConfig.from_saved({"dataset": "digits", "likelihood": "mse"}).image_output == "sigmoid"
    assert TrainConfig.from_saved({"dataset": "digits", "likelihood": "bernoulli"}).image_output is None
    assert TrainConfig.from_saved({"dataset": "clusters", "likelihood": "mse"}).image_output is None


def test_the_linear_mean_is_the_decoder_output_and_the_sigmoid_is_kept():
    from xvae_fast.models.likelihood import build_likelihood
    h = torch.tensor([[-3.0, 0.5, 2.0]])
    x = torch.tensor([[0.0, 1.0, 1.0]])
    lin, sig = build_likelihood("mse", "image", 0.0, "linear"), build_likelihood("mse", "image", 0.0, "sigmoid")
    assert torch.equal(lin.mean(h), h) and torch.equal(sig.mean(h), torch.sigmoid(h))
    assert float(lin.nll(h, x)) == pytest.approx(float((h - x).pow(2).sum()))
    # the gradient that decides whether training can recover from a saturated output
    for lik, alive in ((lin, True), (sig, False)):
        hh = torch.full((1, 3), -30.0, requires_grad=True)
        lik.nll(hh, x).backward()
        assert bool(hh.grad.abs()[0, 1:].min() > 1.0) is alive


def test_dynamic_binarisation_redraws_training_pixels_and_fixes_the_test_set(tmp_path):
    """--binarize dynamic: every training batch the model sees is binary and redrawn (the same image
    twice gives different pixels), the test split is binarised once with the fixed seed of the NLL
    protocol, a stopped run resumes exactly, and vector data is refused (exit 2)."""
    from xvae_fast.training.trainer import Trainer
    from xvae_fast.data.binarize import binarize_fixed
    from train_utils import TINY_DIGITS, load_ck, one_thread
    from test_train_resume import _assert_same_run
    from xvae_fast.train import parse_config
    cfg, explicit = parse_config([*TINY_DIGITS, "--binarize", "dynamic", "--no-outputs",
                                  "--out", str(tmp_path / "seen")])
    with one_thread():
        trainer = Trainer(cfg, explicit=explicit, verbose=False)
        plain = load_dataset(TrainConfig(dataset="digits", limit=160))
        test = trainer.data.test.get_batch(torch.arange(len(trainer.data.test)))
        assert torch.equal(test, binarize_fixed(plain.test, range(len(plain.test))))
        seen = []
        inner = trainer._loss
        trainer._loss = lambda stage, x: (seen.append(x.clone()), inner(stage, x))[1]
        trainer.run()
        trainer.close()
    assert seen and all(set(x.unique().tolist()) <= {0.0, 1.0} for x in seen)
    # stage-1 epochs 1 and 2 (2 batches each) see the same 128 images in another order: a fixed
    # binarisation would give the same pixel total twice; redrawn, the totals differ, both near the
    # total intensity of those images
    x = plain.train.get_batch(torch.arange(len(plain.train)))
    assert len(seen) >= 4 and seen[0].shape[0] + seen[1].shape[0] == len(x)
    totals = [float(seen[0].sum() + seen[1].sum()), float(seen[2].sum() + seen[3].sum())]
    assert totals[0] != totals[1]
    for t in totals:
        assert abs(t - float(x.sum())) < 4 * float((x * (1 - x)).sum()) ** 0.5
    ref, run = str(tmp_path / "ref"), str(tmp_path / "run")
    flags = [*TINY_DIGITS, "--binarize", "dynamic", "--no-outputs"]
    assert train(*flags, "--out", ref) == 0
    assert train(*flags, "--out", run, "--stop-after", "5") == 0
    assert train("--resume", run, "--no-progress") == 0
    _assert_same_run(load_ck(ref), load_ck(run))
    assert load_ck(run)["config"]["binarize"] == "dynamic"
    assert train("--dataset", "clusters", "--binarize", "dynamic", "--out", str(tmp_path / "v")) == 2
