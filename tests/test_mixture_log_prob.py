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
    # only some gradients asked for: the others are None, in the kernels and the fake kernel alike
    for needs in ([True, False, False, False], [False, True, True, False], [False, False, False, True]):
        torch.library.opcheck(torch.ops.xvae_fast.mixture_log_prob_backward, (g, G, zd, lwd, md, lvd, needs))


# -- skipped gradient work ---------------------------------------------------------------------------

NEEDS = [tuple(bool(b >> k & 1) for k in range(4)) for b in range(1, 16)]


@pytest.mark.parametrize("with_resp", [False, True])
@pytest.mark.parametrize("shape", [(33, 13, 5), (9, 1100, 64)])  # one table tile, several
def test_partial_requires_grad_equals_the_full_computation(device, with_resp, shape):
    # Every subset of inputs requiring grad (a frozen prior, detached points, ...): the gradients of
    # those inputs equal the full computation's, and the others get none.
    N, C, d = shape
    base = make_mixture(N, C, d, device, torch.float32, seed=11)
    gen = torch.Generator().manual_seed(12)
    wl = torch.randn(N, generator=gen).to(device)
    wr = torch.randn(N, C, generator=gen).to(device)

    def grads(mask):
        ins = [t.clone().requires_grad_(k) for t, k in zip(base, mask)]
        lp, r = xf.mixture_log_prob(*ins, return_responsibilities=True)
        loss = (lp * wl).sum() + ((r * wr).sum() if with_resp else 0)
        got = torch.autograd.grad(loss, [t for t in ins if t.requires_grad])
        it = iter(got)
        return [next(it) if k else None for k in mask]

    full = grads((True,) * 4)
    for mask in NEEDS[:-1]:
        for name, a, b, k in zip(("z", "log_weights", "means", "log_vars"), grads(mask), full, mask):
            if k:
                torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6 * max(1.0, b.abs().max().item()),
                                           msg=f"{name} {mask}")


@pytest.mark.parametrize("needs", NEEDS)
def test_backward_op_returns_only_the_gradients_asked_for(device, needs):
    z, lw, m, lv = make_mixture(9, 4, 3, device, seed=13)
    g = torch.randn(9, dtype=torch.float64, device=device)
    want = torch.ops.xvae_fast.mixture_log_prob_backward(g, None, z, lw, m, lv)
    got = torch.ops.xvae_fast.mixture_log_prob_backward(g, None, z, lw, m, lv, list(needs))
    for a, b, k in zip(got, want, needs):
        if k:
            torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-13)
        else:
            assert a is None


def test_detached_prior_asks_for_dz_only(device, monkeypatch):
    # S-IntroVAE's detached-target KL: the backward op is told to skip the parameter gradients.
    import xvae_fast.ops._registration as reg
    seen = []
    real = torch.ops.xvae_fast.mixture_log_prob_backward

    class Spy:
        def __getattr__(self, name):
            return getattr(torch.ops.xvae_fast, name)

        def mixture_log_prob_backward(self, *args):
            seen.append(list(args[6]))
            return real(*args)
    monkeypatch.setattr(reg, "ops", Spy())
    z, lw, m, lv = make_mixture(8, 3, 2, device, seed=14)
    logits = torch.zeros(3, dtype=torch.float64, device=device, requires_grad=True)
    z.requires_grad_()
    torch.autograd.grad(xf.mixture_log_prob(z, torch.log_softmax(logits, 0).detach(), m, lv).sum(), z)
    m.requires_grad_()
    torch.autograd.grad(xf.mixture_log_prob(z.detach(), lw, m, lv).sum(), m)
    assert seen == [[True, False, False, False], [False, False, True, False]]


def test_many_components_tiled_path_matches_reference(device):
    # C d past one L2 tile (the tables are cut into tiles, each row keeps an online logsumexp across
    # them): values, responsibilities and all gradients, with upstream gradients on both outputs.
    for dtype, tol in ((torch.float64, dict(rtol=1e-10, atol=1e-12)), (torch.float32, dict(rtol=2e-5, atol=1e-6))):
        args = make_mixture(19, 1500, 48, device, dtype, seed=17, spread=0.5, requires_grad=True)
        assert 1500 * 48 * 2 * (8 if dtype == torch.float64 else 4) > 1 << 18  # several tiles
        lp, r = xf.mixture_log_prob(*args, return_responsibilities=True)
        ref = [t.detach().double().requires_grad_() for t in args]
        rlp, rr = R.mixture_log_prob(*ref, return_responsibilities=True)
        torch.testing.assert_close(lp.double(), rlp, rtol=tol["rtol"], atol=tol["atol"] * rlp.abs().max().item())
        torch.testing.assert_close(r.double(), rr, **tol)
        gen = torch.Generator().manual_seed(18)
        wl = torch.randn(19, generator=gen, dtype=torch.float64).to(device)
        wr = torch.randn(19, 1500, generator=gen, dtype=torch.float64).to(device)
        for with_resp in (False, True):
            loss = (lp.double() * wl).sum() + ((r.double() * wr).sum() if with_resp else 0)
            want_loss = (rlp * wl).sum() + ((rr * wr).sum() if with_resp else 0)
            got = torch.autograd.grad(loss, args, retain_graph=True)
            want = torch.autograd.grad(want_loss, ref, retain_graph=True)
            for a, b in zip(got, want):
                torch.testing.assert_close(a.double(), b, rtol=tol["rtol"] * 10,
                                           atol=tol["atol"] * 10 * max(1.0, b.abs().max().item()))


def test_broadcast_parameters_read_in_place(device):
    # Stride-0 (expanded) weights and log-variances give what their contiguous copies give.
    z, _, m, _ = make_mixture(12, 5, 4, device, seed=19)
    lw = torch.full((1,), -math.log(5), dtype=torch.float64, device=device)
    lv = torch.full((1, 4), 0.3, dtype=torch.float64, device=device)
    lv[0, 2] = -0.7
    a = xf.mixture_log_prob(z, lw.expand(5), m, lv.expand(5, 4))
    b = xf.mixture_log_prob(z, lw.expand(5).contiguous(), m, lv.expand(5, 4).contiguous())
    torch.testing.assert_close(a, b, rtol=0, atol=0)


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
