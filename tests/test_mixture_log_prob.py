"""mixture_log_prob: parity with the reference and with torch.distributions, gradients (all inputs,
also through the responsibilities), opcheck, torch.compile, numerics and bad inputs."""
import math

import pytest
import torch

import xvae_fast as xf
from xvae_fast import reference as R

from conftest import TOLS


def make_mixture(N, C, d, device="cpu", dtype=torch.float64, seed=0, spread=2.0, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(N, d, generator=g, dtype=torch.float64) * spread
    lw = torch.log_softmax(torch.randn(C, generator=g, dtype=torch.float64), 0)
    m = torch.randn(C, d, generator=g, dtype=torch.float64) * spread
    lv = torch.randn(C, d, generator=g, dtype=torch.float64) * 0.5
    return tuple(t.to(device=device, dtype=dtype).requires_grad_(requires_grad) for t in (z, lw, m, lv))


SHAPES = [(1, 1, 1), (7, 3, 2), (33, 13, 5), (64, 100, 32), (9, 17, 1), (5, 8, 9)]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", SHAPES)
def test_parity_forward_and_gradients(device, dtype, shape):
    N, C, d = shape
    args = make_mixture(N, C, d, device, dtype, requires_grad=True)
    lp, r = xf.mixture_log_prob(*args, return_responsibilities=True)
    ref_args = [t.detach().double().requires_grad_() for t in args]
    rlp, rr = R.mixture_log_prob(*ref_args, return_responsibilities=True)
    assert lp.dtype == dtype and lp.shape == (N,) and r.shape == (N, C) and r.dtype == dtype
    tol = TOLS[dtype]
    scale = max(1.0, rlp.abs().max().item())
    torch.testing.assert_close(lp.double(), rlp, rtol=tol["rtol"], atol=tol["atol"] * scale)
    torch.testing.assert_close(r.double(), rr, **tol)
    # Upstream gradients on both outputs: the backward sees g on log p and G on r.
    gen = torch.Generator().manual_seed(5)
    wl = torch.randn(N, generator=gen, dtype=torch.float64).to(device)
    wr = torch.randn(N, C, generator=gen, dtype=torch.float64).to(device)
    got = torch.autograd.grad((lp.double() * wl).sum() + (r.double() * wr).sum(), args)
    want = torch.autograd.grad((rlp * wl).sum() + (rr * wr).sum(), ref_args)
    for name, a, b in zip(("z", "log_weights", "means", "log_vars"), got, want):
        assert a.dtype == dtype, name
        torch.testing.assert_close(a.double(), b, rtol=tol["rtol"],
                                   atol=tol["atol"] * max(1.0, b.abs().max().item()), msg=name)


def test_agrees_with_torch_distributions():
    # An independent formulation: MixtureSameFamily of independent Normals.
    z, lw, m, lv = make_mixture(50, 6, 4, seed=3)
    mix = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(logits=lw),
        torch.distributions.Independent(torch.distributions.Normal(m, torch.exp(0.5 * lv)), 1))
    torch.testing.assert_close(xf.mixture_log_prob(z, lw, m, lv), mix.log_prob(z), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("with_resp", [False, True])
def test_gradcheck(device, with_resp):
    args = make_mixture(9, 5, 3, device, requires_grad=True, seed=2)

    def f(z, lw, m, lv):
        return xf.mixture_log_prob(z, lw, m, lv, return_responsibilities=with_resp)

    assert torch.autograd.gradcheck(f, args)


def test_gradcheck_through_log_softmax(device):
    # The usual learnable-weights form: logits -> log_softmax -> mixture_log_prob.
    z, _, m, lv = make_mixture(6, 4, 2, device, requires_grad=True, seed=4)
    logits = torch.randn(4, dtype=torch.float64, device=device, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda z, a, m, lv: xf.mixture_log_prob(z, torch.log_softmax(a, 0), m, lv), (z, logits, m, lv))


def test_opcheck(device):
    z, lw, m, lv = make_mixture(10, 7, 3, device, torch.float32, requires_grad=True)
    for resp in (False, True):
        torch.library.opcheck(torch.ops.xvae_fast.mixture_log_prob, (z, lw, m, lv, resp))
    g = torch.randn(10, device=device)
    G = torch.randn(10, 7, device=device)
    zd, lwd, md, lvd = (t.detach() for t in (z, lw, m, lv))
    torch.library.opcheck(torch.ops.xvae_fast.mixture_log_prob_backward, (g, None, zd, lwd, md, lvd))
    torch.library.opcheck(torch.ops.xvae_fast.mixture_log_prob_backward, (g, G, zd, lwd, md, lvd))


def test_compile_fullgraph_matches_eager(device):
    torch._dynamo.reset()
    z, lw, m, lv = make_mixture(20, 6, 3, device, torch.float32, seed=6)
    logits = torch.randn(6, device=device)

    def loss(z, logits, m, lv):
        lp, r = xf.mixture_log_prob(z, torch.log_softmax(logits, 0), m, lv, return_responsibilities=True)
        return -(lp.mean()) + (r * r).sum()

    ins = [t.clone().requires_grad_() for t in (z, logits, m, lv)]
    ins_c = [t.clone().requires_grad_() for t in (z, logits, m, lv)]
    out = loss(*ins)
    out_c = torch.compile(loss, fullgraph=True)(*ins_c)
    torch.testing.assert_close(out_c, out)
    for a, b in zip(torch.autograd.grad(out_c, ins_c), torch.autograd.grad(out, ins)):
        torch.testing.assert_close(a, b)


def test_far_points_stay_finite_and_exact():
    # Joint terms near -1e4: a naive exp-then-log underflows to -inf; the logsumexp must not.
    z, lw, m, lv = make_mixture(12, 5, 3, seed=7)
    z = z + 150.0
    lp = xf.mixture_log_prob(z, lw, m, lv)
    assert torch.isfinite(lp).all() and lp.max() < -1e3
    torch.testing.assert_close(lp, R.mixture_log_prob(z, lw, m, lv), rtol=1e-12, atol=0)
    lp32 = xf.mixture_log_prob(*(t.float() for t in (z, lw, m, lv)))
    torch.testing.assert_close(lp32.double(), lp, rtol=1e-5, atol=0)


def test_float32_keeps_precision_far_from_origin():
    # Points and means near 1000 with std 0.01: the expanded z^2 p - 2 z m p + m^2 p form (a matrix
    # product) loses every digit here in float32; the direct (z - m)^2 p form keeps them.
    g = torch.Generator().manual_seed(8)
    d, C = 8, 4
    m = 1000.0 + torch.randn(C, d, generator=g, dtype=torch.float64) * 0.02
    lv = torch.full((C, d), 2 * math.log(0.01), dtype=torch.float64)
    lw = torch.full((C,), -math.log(C), dtype=torch.float64)
    z = m[torch.arange(16) % C] + torch.randn(16, d, generator=g, dtype=torch.float64) * 0.01
    z32, m32 = z.float(), m.float()
    want = R.mixture_log_prob(z32.double(), lw.float().double(), m32.double(), lv.float().double())
    got = xf.mixture_log_prob(z32, lw.float(), m32, lv.float())
    torch.testing.assert_close(got.double(), want, rtol=0, atol=2e-3)


def test_zero_weight_component_is_ignored():
    z, lw, m, lv = make_mixture(10, 4, 3, seed=9)
    lw_extra = torch.cat([lw, torch.tensor([-math.inf], dtype=torch.float64)]).requires_grad_()
    m_extra = torch.cat([m, torch.zeros(1, 3, dtype=torch.float64)]).requires_grad_()
    lv_extra = torch.cat([lv, torch.zeros(1, 3, dtype=torch.float64)]).requires_grad_()
    lp = xf.mixture_log_prob(z, lw_extra, m_extra, lv_extra)
    torch.testing.assert_close(lp, xf.mixture_log_prob(z, lw, m, lv), rtol=1e-13, atol=1e-13)
    glw, gm, glv = torch.autograd.grad(lp.sum(), (lw_extra, m_extra, lv_extra))
    assert glw[-1] == 0 and (gm[-1] == 0).all() and (glv[-1] == 0).all()
    assert torch.isfinite(glw).all()


def test_empty_batch_and_noncontiguous(device):
    z, lw, m, lv = make_mixture(0, 3, 2, device, requires_grad=True)
    lp = xf.mixture_log_prob(z, lw, m, lv)
    assert lp.shape == (0,)
    grads = torch.autograd.grad(lp.sum(), (z, lw, m, lv))
    assert all((g == 0).all() for g in grads)
    # Transposed (non-contiguous) inputs give the same result as contiguous copies.
    zt = torch.randn(3, 11, dtype=torch.float64, device=device).t()
    mt = torch.randn(3, 4, dtype=torch.float64, device=device).t()
    lvt = (0.3 * torch.randn(3, 4, dtype=torch.float64, device=device)).t()
    lw4 = torch.log_softmax(torch.randn(4, dtype=torch.float64, device=device), 0)
    assert not zt.is_contiguous()
    torch.testing.assert_close(xf.mixture_log_prob(zt, lw4, mt, lvt),
                               xf.mixture_log_prob(zt.contiguous(), lw4, mt.contiguous(), lvt.contiguous()),
                               rtol=0, atol=0)


def test_gradients_independent_of_thread_count():
    args = make_mixture(700, 37, 6, dtype=torch.float32, requires_grad=True, seed=10)
    n = torch.get_num_threads()
    try:
        outs = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            lp = xf.mixture_log_prob(*args)
            outs.append((lp, *torch.autograd.grad(lp.sum(), args)))
    finally:
        torch.set_num_threads(n)
    for a, b in zip(*outs):
        assert torch.equal(a, b)


def test_bad_inputs():
    z, lw, m, lv = make_mixture(5, 3, 2)
    f = xf.mixture_log_prob
    with pytest.raises(TypeError, match="z must be a torch.Tensor"):
        f(z.tolist(), lw, m, lv)
    with pytest.raises(TypeError, match="z must be float32"):
        f(z.long(), lw, m, lv)
    with pytest.raises(ValueError, match=r"z must have shape \(N, d\)"):
        f(z[0], lw, m, lv)
    with pytest.raises(ValueError, match=r"log_weights must have shape \(C,\) with C >= 1"):
        f(z, lw[:0], m[:0], lv[:0])
    with pytest.raises(ValueError, match=r"means must have shape \(C, d\) = \(3, 2\)"):
        f(z, lw, m[:, :1], lv)
    with pytest.raises(ValueError, match=r"log_vars must have shape \(C, d\) = \(3, 2\)"):
        f(z, lw, m, lv[:2])
    with pytest.raises(TypeError, match="means has dtype torch.float32 but z has torch.float64"):
        f(z, lw, m.float(), lv)
    with pytest.raises(ValueError, match="log_vars is on meta but z is on cpu"):
        f(z, lw, m, lv.to("meta"))
    with pytest.raises(ValueError, match="log_weights must be log-probabilities .* got logsumexp 0.5"):
        f(z, lw + 0.5, m, lv)
    with pytest.raises(ValueError, match="log_weights contains NaN"):
        f(z, torch.tensor([0.0, float("nan"), -1.0], dtype=torch.float64), m, lv)
    with pytest.raises(ValueError, match="means contains NaN or inf"):
        f(z, lw, m.clone().fill_(float("inf")), lv)
    with pytest.raises(ValueError, match="log_vars contains NaN or inf"):
        f(z, lw, m, lv.clone().fill_(float("nan")))
    # The raw op checks shapes itself (no crash deep in C++ on a direct torch.ops call).
    with pytest.raises(RuntimeError, match=r"means must be \(C, d\)"):
        torch.ops.xvae_fast.mixture_log_prob(z, lw, m[:, :1], lv, False)
    with pytest.raises(RuntimeError, match=r"grad_resp must be \(5, 3\)"):
        torch.ops.xvae_fast.mixture_log_prob_backward(torch.ones(5, dtype=torch.float64),
                                                      torch.ones(5, 2, dtype=torch.float64), z, lw, m, lv)
