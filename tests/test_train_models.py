"""Architectures (paper Table 5 and the small digits net) and the AE / VAE modules."""
import pytest
import torch

import xvae_fast as xf
from xvae_fast.errors import ConfigError
from xvae_fast.models import VAE, Autoencoder, get_ops


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 64, 64), (3, 32, 32), (5,)])
def test_shapes_round_trip(shape):
    kind = "image" if len(shape) == 3 else "vector"
    ae = Autoencoder(kind, shape, latent=6, hidden=[16])
    x = torch.rand(3, *shape)
    xhat, z = ae(x)
    assert z.shape == (3, 6) and xhat.shape == x.shape
    if kind == "image":
        assert xhat.min() >= 0 and xhat.max() <= 1  # sigmoid output for pixels
    prior = xf.MixturePrior(torch.full((6,), 1 / 6), torch.randn(6, 6), torch.rand(6, 6) + 0.5)
    vae = VAE(kind, shape, 6, "mixture", xf.Plan.preset("full", 6), hidden=[16])
    vae.set_prior(prior)
    terms = vae.loss(x)
    assert set(terms) == {"loss", "recon", "kl", "kl_cat", "kl_gauss"}
    assert torch.allclose(terms["loss"], terms["recon"] + terms["kl"])
    assert torch.allclose(terms["kl"], terms["kl_cat"] + terms["kl_gauss"], rtol=1e-5)
    terms["loss"].backward()
    assert vae.logits_head.weight.grad is not None and vae.logits_head.weight.grad.abs().sum() > 0
    assert vae.generate(4, 1.5).shape == (4, *shape)


def test_table5_channels():
    mnist = Autoencoder("image", (1, 28, 28), 64)
    convs = [m for m in mnist.body.net if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 64, 128]
    celeba = Autoencoder("image", (3, 64, 64), 256)
    convs = [m for m in celeba.body.net if isinstance(m, torch.nn.Conv2d)]
    assert [c.in_channels for c in convs] + [convs[-1].out_channels] == [3, 32, 64, 128, 256]


def test_unsupported_image_size():
    with pytest.raises(ConfigError, match="unsupported image size 20"):
        Autoencoder("image", (1, 20, 20), 4)


def test_prior_must_match_the_latent_size():
    vae = VAE("vector", (2,), 3, "mixture", xf.Plan.preset("full", 3), hidden=[8])
    with pytest.raises(ValueError, match="latent size mismatch between stages"):
        vae.set_prior(xf.MixturePrior(torch.full((4,), 0.25), torch.zeros(4, 4), torch.ones(4, 4)))
    single = VAE("vector", (2,), 3, "single", hidden=[8])
    with pytest.raises(ValueError, match="single-Gaussian prior"):
        single.set_prior(xf.MixturePrior(torch.full((3,), 1 / 3), torch.zeros(3, 3), torch.ones(3, 3)))


def test_mixture_vae_matches_the_reference_ops():
    """With the fused ops, a VAE's KL equals the plain-PyTorch reference on the same inputs."""
    torch.manual_seed(0)
    prior = xf.MixturePrior(torch.tensor([0.2, 0.3, 0.5]), torch.randn(3, 3), torch.rand(3, 3) + 0.5)
    fused = VAE("vector", (2,), 3, "mixture", xf.Plan.preset("full", 3), hidden=[8], ops=get_ops())
    ref = VAE("vector", (2,), 3, "mixture", xf.Plan.preset("full", 3), hidden=[8],
              ops=get_ops(prefer_reference=True))
    ref.load_state_dict(fused.state_dict(), strict=False)
    fused.set_prior(prior)
    ref.set_prior(prior)
    x = torch.randn(16, 2)
    a = fused.kl_terms(*fused.encode(x))
    b = ref.kl_terms(*ref.encode(x))
    for u, v in zip(a, b):
        torch.testing.assert_close(u, v, rtol=1e-5, atol=1e-6)
    assert (get_ops() is xf) == xf.extension_available()
