"""The FID Inception-v3: its layout (the keys and shapes of pytorch-fid's weight file), an end-to-end
run on a randomly initialised network (the real weights need network access), the weight-loading
paths, and the clear error when the weights are missing offline."""
import hashlib
import os
import urllib.error

import numpy as np
import pytest
import torch

from xvae_fast.errors import XVAEError
from xvae_fast.evaluation import frechet_distance_from_features, inception_score
from xvae_fast.evaluation.inception import (FID_WEIGHTS_FILE, FID_WEIGHTS_URL, FIDInceptionV3,
                                            InceptionWeightsError, hub_cache_path, inception_outputs,
                                            load_inception, resolve_weights, to_rgb)

# The state dict of pytorch-fid's network (torchvision's Inception3(num_classes=1008,
# aux_logits=False) with its FIDInceptionA/C/E_1/E_2 blocks), which loads
# pt_inception-2015-12-05-6726825d.pth strictly: 566 tensors, 23,885,486 numbers, and this sha256
# of its "key:shape" lines in order. Computed from pytorch-fid 0.3.0 and torchvision 0.28 sources.
LAYOUT_SHA256 = "b45715ac497e250fa7f72d1ef3ee440168ea622a4180b55a5c8dabd2d9d5258b"


@pytest.fixture(scope="module")
def random_net():
    torch.manual_seed(0)
    return FIDInceptionV3()


@pytest.fixture(scope="module")
def weights_file(random_net, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("inception") / "random_inception.pth")
    torch.save(random_net.state_dict(), path)
    return path


@pytest.fixture
def empty_hub(tmp_path, monkeypatch):
    """A torch hub cache without the weights."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    before = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "torch_home" / "hub"))
    yield str(tmp_path / "torch_home" / "hub")
    torch.hub.set_dir(before)


def test_layout_matches_pytorch_fid_weight_file(random_net):
    sd = random_net.state_dict()
    lines = "\n".join(f"{k}:{tuple(v.shape)}" for k, v in sd.items())
    assert len(sd) == 566
    assert sum(v.numel() for v in sd.values()) == 23_885_486
    assert hashlib.sha256(lines.encode()).hexdigest() == LAYOUT_SHA256
    assert sd["fc.weight"].shape == (1008, 2048) and "AuxLogits.fc.weight" not in sd
    assert random_net.Mixed_7b.pool == "avg" and random_net.Mixed_7c.pool == "max"


def test_preprocessing_resizes_to_299_and_maps_to_minus_one_one(random_net):
    x = torch.full((2, 3, 8, 8), 0.5)
    x[1] = 1.0
    y = random_net.preprocess(x)
    assert y.shape == (2, 3, 299, 299)
    assert torch.allclose(y[0], torch.zeros_like(y[0])) and torch.allclose(y[1], torch.ones_like(y[1]))
    g = torch.rand(3, 1, 8, 8)
    rgb = to_rgb(g)
    assert rgb.shape == (3, 3, 8, 8) and torch.equal(rgb[:, 2], g[:, 0])


def test_end_to_end_on_a_random_network_loaded_from_a_saved_state_dict(random_net, weights_file):
    net, source = load_inception(weights_file, download=False)
    assert source == weights_file
    for (k, a), b in zip(random_net.state_dict().items(), net.state_dict().values()):
        assert torch.equal(a, b), k
    assert not net.training
    # the protocol's path: 299x299 input, pool3 features and logits, on two grayscale images in [0, 1]
    g = torch.Generator().manual_seed(1)
    images = torch.rand(2, 1, 8, 8, generator=g)
    pool, logits = inception_outputs(net, images, batch_size=50)
    assert pool.shape == (2, 2048) and logits.shape == (2, 1008)
    assert np.isfinite(pool).all() and np.isfinite(logits).all() and (pool >= 0).all()  # post-ReLU
    assert pool.std() > 1e-3 and not np.allclose(pool[0], pool[1], rtol=1e-3)
    # the Inception Score's logits: the pool features times the fc weights, without the fc bias
    w = net.fc.weight.double().numpy()
    assert np.allclose(logits, pool @ w.T, rtol=1e-4, atol=1e-5)
    mean, std = inception_score(logits, splits=2)
    assert 1.0 - 1e-9 <= mean <= 1008 and std >= 0


def test_fid_through_the_random_network_self_zero_and_noise_grows(random_net):
    # pytorch-fid's smallest feature size (--dims 64) and a 75x75 input keep this quick; the code
    # path is the protocol's one
    net = FIDInceptionV3(resize_to=75)
    net.load_state_dict(random_net.state_dict())
    g = torch.Generator().manual_seed(2)
    real = torch.rand(24, 1, 8, 8, generator=g)
    for dims in (64,):
        f_real, lg = inception_outputs(net, real, batch_size=7, dims=dims, logits=False)
        assert f_real.shape == (24, dims) and lg is None
        f_again, _ = inception_outputs(net, real, batch_size=24, dims=dims, logits=False)
        scale = np.trace(np.cov(f_real.T))
        assert abs(frechet_distance_from_features(f_real, f_again)) < 1e-6 * scale
        fids = [frechet_distance_from_features(
            f_real, inception_outputs(net, (real + s * torch.randn(real.shape, generator=g)).clamp(0, 1),
                                      dims=dims, logits=False)[0]) for s in (0.05, 0.3, 1.0)]
        assert 1e-6 * scale < fids[0] < fids[1] < fids[2], fids


def test_weights_from_the_torch_hub_cache(random_net, weights_file, empty_hub):
    assert hub_cache_path() == os.path.join(empty_hub, "checkpoints", FID_WEIGHTS_FILE)
    os.makedirs(os.path.dirname(hub_cache_path()))
    os.symlink(weights_file, hub_cache_path())
    sd, source = resolve_weights(None, download=False)
    assert source == hub_cache_path()
    assert torch.equal(sd["fc.weight"], random_net.state_dict()["fc.weight"])


def test_missing_weights_offline_give_a_clear_error(empty_hub, tmp_path, monkeypatch):
    with pytest.raises(InceptionWeightsError) as exc:
        resolve_weights(None, download=False)
    msg = str(exc.value)
    assert "--inception-weights" in msg and hub_cache_path() in msg and FID_WEIGHTS_URL in msg
    assert isinstance(exc.value, XVAEError)

    def offline(*args, **kwargs):    # what torch.hub raises without network access
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(InceptionWeightsError, match="could not download") as exc:
        load_inception(None, download=True)
    assert "--inception-weights" in str(exc.value) and hub_cache_path() in str(exc.value)
    with pytest.raises(InceptionWeightsError, match="does not exist"):
        load_inception(str(tmp_path / "nowhere.pth"))


def test_unfit_or_corrupt_weight_files_are_refused(tmp_path, random_net):
    sd = dict(random_net.state_dict())
    del sd["fc.bias"]
    partial = str(tmp_path / "partial.pth")
    torch.save(sd, partial)
    with pytest.raises(InceptionWeightsError, match="do not fit"):
        load_inception(partial)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"\x00" * 100)
    with pytest.raises(InceptionWeightsError, match="could not read"):
        load_inception(str(junk))
