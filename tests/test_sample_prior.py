import numpy as np
import pytest
import torch

import xvae_fast as xf
from xvae_fast import reference as R

from conftest import make_prior


def _gen(seed=0, device="cpu"):
    return torch.Generator(device=device).manual_seed(seed)


@pytest.mark.parametrize("routing", ["per-coordinate", "per-row"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_parity_replayed_draws(device, dtype, routing):
    prior = make_prior(7, device, dtype, C=5)
    z, state = xf.sample_mixture_with_state(prior.weights, prior.means, prior.stds, 33, 0.8, routing,
                                            _gen(1, device))
    noise = xf.draw_noise(state, 33, 7, dtype)
    z_ref = R.sample_prior(prior, 33, 0.8, routing, noise=noise)
    assert z.dtype == dtype
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(z, z_ref, **tol)


@pytest.mark.parametrize("alpha", [0.5, 1.0, 1.5])
def test_moments_match_the_mixture_and_scale_with_alpha(alpha):
    prior = make_prior(3, C=4, seed=5)
    n = 200_000
    z = xf.sample_prior(prior, n, alpha=alpha, generator=_gen(8)).numpy()
    w, M, S = prior.weights.numpy(), prior.means.numpy(), prior.stds.numpy()
    mean = (w[:, None] * M).sum(0)
    var = (w[:, None] * ((alpha * S) ** 2 + M**2)).sum(0) - mean**2
    se_mean = np.sqrt(var / n)
    assert (np.abs(z.mean(0) - mean) < 5 * se_mean).all()
    np.testing.assert_allclose(z.var(0), var, rtol=0.02)


def test_per_row_routing_is_ordinary_gmm_sampling():
    K = 4
    M = 100.0 * torch.arange(K, dtype=torch.float64)[:, None].expand(K, K).contiguous()
    prior = xf.MixturePrior(torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64), M,
                            torch.full((K, K), 1e-3, dtype=torch.float64))
    c_row = torch.round(xf.sample_prior(prior, 3000, routing="per-row", generator=_gen(2)) / 100)
    assert (c_row == c_row[:, :1]).all()
    freq = torch.bincount(c_row[:, 0].long(), minlength=K).double() / 3000
    torch.testing.assert_close(freq, prior.weights, atol=0.03, rtol=0)
    c_coord = torch.round(xf.sample_prior(prior, 3000, generator=_gen(2)) / 100)
    assert (c_coord != c_coord[:, :1]).any()


def test_single_gaussian_prior():
    mean, std = torch.tensor([1.0, -2.0]), torch.tensor([0.5, 2.0])
    z = xf.sample_prior(xf.MixturePrior.single(mean, std), 100_000, alpha=2.0, generator=_gen(3))
    torch.testing.assert_close(z.mean(0), mean, atol=0.05, rtol=0)
    torch.testing.assert_close(z.std(0), 2.0 * std, rtol=0.02, atol=0)


@pytest.mark.parametrize("routing", ["per-coordinate", "per-row"])
def test_gradcheck_in_means_and_stds(device, routing):
    prior = make_prior(3, device, C=4)
    M = prior.means.clone().requires_grad_()
    S = prior.stds.clone().requires_grad_()
    fn = lambda m, s: xf.sample_mixture_with_state(prior.weights, m, s, 6, 1.3, routing,
                                                   _gen(4, device))[0]
    assert torch.autograd.gradcheck(fn, (M, S))


def test_opcheck(device):
    prior = make_prior(3, device, torch.float32, C=4)
    M, S = prior.means.clone().requires_grad_(), prior.stds.clone().requires_grad_()
    torch.library.opcheck(torch.ops.xvae_fast.sample_prior, (M, S, prior.weights, 5, 1.0, False, None),
                          test_utils=("test_schema", "test_autograd_registration", "test_faketensor"))
    z, state = torch.ops.xvae_fast.sample_prior(M.detach(), S.detach(), prior.weights, 5, 1.0, True)
    torch.library.opcheck(torch.ops.xvae_fast.sample_prior_backward,
                          (torch.ones_like(z), state, M.detach(), S.detach(), prior.weights, 1.0, True))


def test_determinism_and_empty():
    prior = make_prior(5)
    torch.manual_seed(0)
    a = xf.sample_prior(prior, 10)
    torch.manual_seed(0)
    assert torch.equal(a, xf.sample_prior(prior, 10))
    assert xf.sample_prior(prior, 0).shape == (0, 5)


def test_bad_inputs():
    prior = make_prior(3)
    with pytest.raises(ValueError, match="alpha must be a positive"):
        xf.sample_prior(prior, 4, alpha=0.0)
    with pytest.raises(ValueError, match="alpha must be a positive"):
        xf.sample_prior(prior, 4, alpha=float("nan"))
    with pytest.raises(ValueError, match="n must be a non-negative int"):
        xf.sample_prior(prior, -1)
    with pytest.raises(ValueError, match="routing must be one of"):
        xf.sample_prior(prior, 4, routing="per-column")
    with pytest.raises(TypeError, match="prior must be an xvae_fast.MixturePrior"):
        xf.sample_prior("gmm", 4)
