import pytest
import torch

import xvae_fast as xf
from xvae_fast import reference as R

from conftest import TOLS, make_inputs


def _prior(K, device, dtype=torch.float64):
    g = torch.Generator().manual_seed(3)
    return (torch.randn(K, generator=g, dtype=torch.float64).to(device, dtype),
            (torch.rand(K, generator=g, dtype=torch.float64) + 0.5).to(device, dtype))


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
def test_parity(device, dtype, reduction):
    _, mu, lv = make_inputs(37, 11, device, dtype, requires_grad=True)
    pm, ps = _prior(11, device)
    out = xf.gaussian_kl(mu, lv, pm, ps, reduction)
    rmu, rlv = (t.detach().double().requires_grad_() for t in (mu, lv))
    ref = R.gaussian_kl(rmu, rlv, pm, ps, reduction)
    assert out.dtype == dtype and out.shape == ref.shape
    torch.testing.assert_close(out.double(), ref, **TOLS[dtype])
    w = torch.randn(out.shape, dtype=torch.float64, device=device)
    g = torch.autograd.grad((out.double() * w).sum(), (mu, lv))
    gr = torch.autograd.grad((ref * w).sum(), (rmu, rlv))
    for a, b in zip(g, gr):
        torch.testing.assert_close(a.double(), b, rtol=TOLS[dtype]["rtol"],
                                   atol=TOLS[dtype]["atol"] * max(1.0, b.abs().max().item()))


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_gradcheck(device, reduction):
    _, mu, lv = make_inputs(6, 5, device, requires_grad=True)
    pm, ps = _prior(5, device)
    assert torch.autograd.gradcheck(lambda a, b: xf.gaussian_kl(a, b, pm, ps, reduction), (mu, lv))


def test_opcheck(device):
    _, mu, lv = make_inputs(6, 5, device, torch.float32, requires_grad=True)
    pm, ps = _prior(5, device, torch.float32)
    for red in (0, 1, 2):
        torch.library.opcheck(torch.ops.xvae_fast.gaussian_kl_forward, (mu, lv, pm, ps, red))
    torch.library.opcheck(torch.ops.xvae_fast.gaussian_kl_backward,
                          (torch.ones(6, device=device), mu.detach(), lv.detach(), pm, ps, 0))


def test_agrees_with_monte_carlo():
    # KL(q || p) = E_q[log q(z) - log p(z)], estimated with 400k draws per row (fixed seed).
    K = 4
    _, mu, lv = make_inputs(3, K)
    pm, ps = _prior(K, "cpu")
    g = torch.Generator().manual_seed(7)
    n = 400_000
    sig = torch.exp(0.5 * lv)
    z = mu[:, None, :] + sig[:, None, :] * torch.randn(3, n, K, generator=g, dtype=torch.float64)
    q = torch.distributions.Normal(mu[:, None, :], sig[:, None, :])
    p = torch.distributions.Normal(pm, ps)
    mc = (q.log_prob(z) - p.log_prob(z)).sum(-1)
    est, se = mc.mean(1), mc.std(1) / n**0.5
    kl = xf.gaussian_kl(mu, lv, pm, ps, "none")
    assert ((kl - est).abs() < 5 * se).all(), (kl, est, se)


def test_empty_and_bad_inputs():
    _, mu, lv = make_inputs(0, 3)
    pm, ps = _prior(3, "cpu")
    assert xf.gaussian_kl(mu, lv, pm, ps).shape == (0,)
    _, mu, lv = make_inputs(2, 3)
    with pytest.raises(ValueError, match="prior_std must be > 0"):
        xf.gaussian_kl(mu, lv, pm, torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="prior_mean must have shape \\(3,\\)"):
        xf.gaussian_kl(mu, lv, pm[:2], ps)
    with pytest.raises(ValueError, match="logvar has shape"):
        xf.gaussian_kl(mu, lv[:1], pm, ps)
    with pytest.raises(ValueError, match="prior_mean is on meta but mu is on cpu"):
        xf.gaussian_kl(mu, lv, pm.to("meta"), ps)
    with pytest.raises(ValueError, match="prior_mean requires grad"):
        xf.gaussian_kl(mu, lv, pm.clone().requires_grad_(), ps)
    with pytest.raises(ValueError, match="prior_std contains NaN"):
        xf.gaussian_kl(mu, lv, pm, torch.tensor([1.0, float("nan"), 1.0], dtype=torch.float64))
