"""Bad input gives clear errors (a message, exit status 2, no traceback) before any training."""
import importlib.util
import os

import numpy as np
import pytest
from PIL import Image

from xvae_fast.config import TrainConfig
from xvae_fast.errors import ConfigError, DataError
from xvae_fast.training.trainer import Trainer

from train_utils import TINY_CLUSTERS, cli, one_thread, train


def _trainer(**kw):
    kw.setdefault("progress", False)
    with one_thread():
        return Trainer(TrainConfig(**kw), verbose=False)


def test_cli_errors_are_messages_not_tracebacks(tmp_path):
    r = cli("xvae_fast.train", "--dataset", f"images:{tmp_path / 'missing'}", "--out", tmp_path / "r")
    assert r.returncode == 2
    assert "error: image folder" in r.stderr and "does not exist" in r.stderr
    assert "Traceback" not in r.stderr
    r = cli("xvae_fast.train", "--plan", "transport-everything", "--out", tmp_path / "r")
    assert r.returncode == 2 and "unknown configuration (--plan) 'transport-everything'" in r.stderr


def test_missing_data_folder(tmp_path):
    with pytest.raises(DataError, match="MNIST folder .* does not exist"):
        _trainer(dataset=f"mnist:{tmp_path / 'nope'}", out=str(tmp_path / "r"))
    with pytest.raises(DataError, match="image folder .* does not exist"):
        _trainer(dataset=f"celeba:{tmp_path / 'nope'}", out=str(tmp_path / "r"))


def test_wrong_image_sizes(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(4):
        Image.fromarray(np.full((16, 16, 3), 40 * i, np.uint8)).save(folder / f"{i}.png")
    with pytest.raises(DataError, match=r"16x16, smaller than the 64x64 input.*--image-size"):
        _trainer(dataset=f"images:{folder}", out=str(tmp_path / "r"))
    with pytest.raises(ConfigError, match="unsupported image size 20"):
        _trainer(dataset=f"images:{folder}", image_size=20, out=str(tmp_path / "r"))
    # a size the architectures take trains (latent 1: 3 training rows fit a 1-component prior)
    t = _trainer(dataset=f"images:{folder}", image_size=16, latent=1, out=str(tmp_path / "ok"))
    assert t.info.shape == (3, 16, 16)


def test_latent_size_mismatch_between_stages(tmp_path):
    src = str(tmp_path / "src")
    assert train(*TINY_CLUSTERS, "--no-outputs", "--epochs-vae", "0", "--out", src) == 0
    with pytest.raises(ConfigError, match="latent size mismatch between stages.*latent size 3.*--latent 4"):
        _trainer(dataset="clusters", latent=4, stage1_from=src, out=str(tmp_path / "r"))
    with pytest.raises(ConfigError, match="was trained on clusters"):
        _trainer(dataset="digits", latent=3, stage1_from=src, out=str(tmp_path / "r"))
    stopped = str(tmp_path / "stopped")
    assert train(*TINY_CLUSTERS, "--no-outputs", "--stop-after", "2", "--out", stopped) == 0
    with pytest.raises(ConfigError, match="has not finished stage 1"):
        _trainer(dataset="clusters", latent=3, stage1_from=stopped, out=str(tmp_path / "r"))


def test_unknown_model_device_and_bad_combinations(tmp_path):
    out = str(tmp_path / "r")
    with pytest.raises(ConfigError, match="unknown --model 'gan'"):
        _trainer(model="gan", out=out)
    with pytest.raises(ConfigError, match="unsupported --device 'tpu'|unknown --device 'tpu'"):
        _trainer(device="tpu", out=out)
    with pytest.raises(ConfigError, match="--prior-fit single is only for --plan single"):
        _trainer(plan="full", prior_fit="single", out=out)
    with pytest.raises(ConfigError, match="--epochs-ae must be >= 1"):
        _trainer(epochs_ae=0, out=out)


def test_existing_run_folder_needs_resume_or_overwrite(tmp_path):
    run = str(tmp_path / "r")
    assert train(*TINY_CLUSTERS, "--model", "vae", "--no-outputs", "--out", run) == 0
    with pytest.raises(ConfigError, match="already holds a run.*--resume"):
        _trainer(dataset="clusters", model="vae", out=run)
    assert train(*TINY_CLUSTERS, "--model", "vae", "--no-outputs", "--out", run, "--overwrite") == 0


def test_tensorboard_is_optional(tmp_path):
    has_tb = importlib.util.find_spec("tensorboard") is not None
    if has_tb:
        t = _trainer(dataset="clusters", tensorboard=True, out=str(tmp_path / "r"))
        assert os.path.isdir(os.path.join(t.run_dir, "tensorboard"))
    else:
        with pytest.raises(ConfigError, match="pip install tensorboard"):
            _trainer(dataset="clusters", tensorboard=True, out=str(tmp_path / "r"))
