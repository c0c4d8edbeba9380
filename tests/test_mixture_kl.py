import numpy as np
import pytest
import torch

import xvae_fast as xf
from xvae_fast import reference as R

from conftest import TOLS, make_inputs, make_prior

REDUCTIONS = ["none", "mean", "sum"]


def _both(fn_inputs, prior, reduction):
    return (xf.mixture_kl(*fn_inputs, prior, reduction), R.mixture_kl(*fn_inputs, prior, reduction))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
def test_parity_forward_backward(device, dtype, reduction):
    B, K = 67, 13  # odd sizes exercise vector tails and partial row blocks
    prior = make_prior(K, device)
    inputs = make_inputs(B, K, device, dtype, requires_grad=True)
    # The reference runs in float64 on the same rounded inputs.
    ref_inputs = tuple(t.detach().double().requires_grad_() for t in inputs)
    out = xf.mixture_kl(*inputs, prior, reduction)
    ref = R.mixture_kl(*ref_inputs, prior, reduction)
    for o, r in zip(out, ref):
        assert o.dtype == dtype and o.shape == r.shape
        torch.testing.assert_close(o.double(), r, **TOLS[dtype])
    w = [torch.randn(o.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(i))
         for i, o in enumerate(out)]
    grads = torch.autograd.grad(sum((o.double() * wi.to(device)).sum() for o, wi in zip(out, w)), inputs)
    ref_grads = torch.autograd.grad(sum((r * wi.to(device)).sum() for r, wi in zip(ref, w)), ref_inputs)
    for g, r in zip(grads, ref_grads):
        assert g.dtype == dtype
        scale = r.abs().max().item()
        torch.testing.assert_close(g.double(), r, rtol=TOLS[dtype]["rtol"],
                                   atol=TOLS[dtype]["atol"] * max(scale, 1.0))


def test_float64_parity_is_tight_at_scale():
    B, K = 1024, 64
    prior = make_prior(K)
    inputs = make_inputs(B, K, requires_grad=True)
    for o, r in zip(xf.mixture_kl(*inputs, prior, "mean"), R.mixture_kl(*inputs, prior, "mean")):
        assert abs(o.item() - r.item()) <= 1e-10 * abs(r.item())


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_gradcheck(device, reduction):
    prior = make_prior(5, device)
    inputs = make_inputs(7, 5, device, torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *a: xf.mixture_kl(*a, prior, reduction), inputs)


def test_gradcheck_extreme_logits(device):
    prior = make_prior(4, device)
    l, mu, lv = make_inputs(5, 4, device, torch.float64)
    l = (l - 60).requires_grad_()  # every row uses the rescaled (c < 0) path
    assert torch.autograd.gradcheck(lambda a, b, c: xf.mixture_kl(a, b, c, prior, "mean"),
                                    (l, mu.requires_grad_(), lv.requires_grad_()))


def test_opcheck(device):
    prior = make_prior(6, device)
    l, mu, lv = make_inputs(9, 6, device, torch.float32, requires_grad=True)
    _, logw, _, _, m, s = prior.tensors_for(torch.float32, device)
    for red in (0, 1, 2):
        torch.library.opcheck(torch.ops.xvae_fast.mixture_kl_forward, (l, mu, lv, logw, m, s, red))
    g = torch.ones((), device=device)
    stats = [t.detach() for t in torch.ops.xvae_fast.mixture_kl_forward(l, mu, lv, logw, m, s, 1)]
    torch.library.opcheck(torch.ops.xvae_fast.mixture_kl_backward,
                          (g, g, g, l.detach(), mu.detach(), lv.detach(), logw, m, s, stats[3],
                           stats[4], 1))


def test_matches_independent_numpy():
    B, K = 50, 6
    prior = make_prior(K)
    l, mu, lv = (t.numpy() for t in make_inputs(B, K))
    w = prior.weights.numpy()
    m, s = np.diag(prior.means.numpy()), np.diag(prior.stds.numpy())
    sp = np.log1p(np.exp(l))
    pi_q = (sp / sp.sum(1, keepdims=True)).mean(0)
    cat = np.sum(pi_q * np.log(pi_q / w))
    sig2 = np.exp(lv)
    kln = np.log(s / np.sqrt(sig2)) + (sig2 + (mu - m) ** 2) / (2 * s**2) - 0.5
    gauss = (kln * pi_q).sum(1)
    total, c, g = xf.mixture_kl(*map(torch.from_numpy, (l, mu, lv)), prior, "none")
    np.testing.assert_allclose(c.numpy(), np.full(B, cat), rtol=1e-12)
    np.testing.assert_allclose(g.numpy(), gauss, rtol=1e-12)
    np.testing.assert_allclose(total.numpy(), cat + gauss, rtol=1e-12)


def test_extreme_logits_stay_finite_float32():
    K = 16
    prior = make_prior(K, dtype=torch.float32)
    _, mu, lv = make_inputs(8, K, dtype=torch.float32)
    for lo, hi in [(-100.0, -100.0), (-100.0, 100.0), (100.0, 100.0), (-100.0, -90.0)]:
        l = torch.linspace(lo, hi, 8 * K).reshape(8, K).requires_grad_()
        out = xf.mixture_kl(l, mu, lv, prior, "mean")
        assert all(torch.isfinite(o) for o in out)
        (g,) = torch.autograd.grad(out[0], l)
        assert torch.isfinite(g).all()
        ref = R.mixture_kl(l.double(), mu.double(), lv.double(), prior, "mean")
        torch.testing.assert_close(out[0].double(), ref[0], rtol=1e-4, atol=1e-5)


def test_empty_batch():
    prior = make_prior(4)
    l, mu, lv = make_inputs(0, 4, requires_grad=True)
    total, cat, gauss = xf.mixture_kl(l, mu, lv, prior, "none")
    assert total.shape == cat.shape == gauss.shape == (0,)
    total, _, _ = xf.mixture_kl(l, mu, lv, prior, "mean")
    assert total.item() == 0.0
    (g,) = torch.autograd.grad(total, l)
    assert g.shape == (0, 4)


def test_non_contiguous_inputs():
    prior = make_prior(6)
    l, mu, lv = make_inputs(12, 6)
    lt, mut, lvt = (t.t().contiguous().t() for t in (l, mu, lv))  # same values, transposed strides
    assert not lt.is_contiguous()
    for a, b in zip(xf.mixture_kl(lt, mut, lvt, prior, "none"), xf.mixture_kl(l, mu, lv, prior, "none")):
        torch.testing.assert_close(a, b, rtol=1e-14, atol=0)
    wide = torch.randn(12, 12, dtype=torch.float64)[:, ::2]
    torch.testing.assert_close(xf.mixture_kl(wide, mu, lv, prior)[0],
                               R.mixture_kl(wide, mu, lv, prior)[0], rtol=1e-10, atol=1e-12)


def test_batch_statistics_do_not_depend_on_thread_count():
    prior = make_prior(32, dtype=torch.float32)
    inputs = make_inputs(4096, 32, dtype=torch.float32)
    n = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = xf.mixture_kl(*inputs, prior, "mean")
        torch.set_num_threads(2)
        two = xf.mixture_kl(*inputs, prior, "mean")
    finally:
        torch.set_num_threads(n)
    for a, b in zip(one, two):
        assert torch.equal(a, b)


def test_bad_inputs():
    prior = make_prior(4)
    l, mu, lv = make_inputs(3, 4)
    with pytest.raises(ValueError, match="mu has shape"):
        xf.mixture_kl(l, mu[:, :3], lv, prior)
    with pytest.raises(TypeError, match="logvar has dtype"):
        xf.mixture_kl(l, mu, lv.float(), prior)
    with pytest.raises(ValueError, match="logits has 5 latent coordinates"):
        xf.mixture_kl(torch.randn(3, 5, dtype=torch.float64), mu, lv, prior)
    with pytest.raises(ValueError, match="reduction must be one of"):
        xf.mixture_kl(l, mu, lv, prior, "avg")
    with pytest.raises(TypeError, match="logits must be float32"):
        xf.mixture_kl(l.long(), mu, lv, prior)
    with pytest.raises(TypeError, match="prior must be an xvae_fast.MixturePrior"):
        xf.mixture_kl(l, mu, lv, (prior.weights, prior.means, prior.stds))
    wide = make_prior(4, C=3)
    with pytest.raises(ValueError, match="needs C == K"):
        xf.mixture_kl(l, mu, lv, wide)
    with pytest.raises(ValueError, match="must have shape \\(B, K\\)"):
        xf.mixture_kl(l[0], mu, lv, prior)
    # Devices (the meta device stands in for a second device on a CPU-only machine).
    with pytest.raises(ValueError, match="logvar is on meta but logits is on cpu"):
        xf.mixture_kl(l, mu, lv.to("meta"), prior)
    lm, mm, vm = (t.to("meta") for t in (l, mu, lv))
    with pytest.raises(ValueError, match="the prior is on cpu but mu is on meta"):
        xf.mixture_kl(lm, mm, vm, prior)
