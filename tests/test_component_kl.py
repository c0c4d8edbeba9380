"""component_kl and mixture_bound (SPEC Revision 2): parity with the reference in every dtype (forward
and the gradients of all three outputs), gradcheck, opcheck, torch.compile, gradients fuzzed over the
documented input range, float32 precision far from the origin, thread-count determinism, empty and
non-contiguous inputs, zero-weight components, and bad inputs."""
import math

import pytest
import torch

import xvae_fast as xf
from xvae_fast import reference as R

from conftest import TOLS

ops = torch.ops.xvae_fast
REDUCTIONS = ("none", "mean", "sum")
KINDS = ("tight", "mixture")


def _acc(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


def make_prior(C, K, device="cpu", dtype=torch.float64, seed=0, spread=1.0):
    """A random mixture prior of C components over K coordinates, stored in `dtype` (the
    accumulation dtype of the test inputs, so the float64 reference sees the same table values)."""
    g = torch.Generator().manual_seed(seed)
    w = torch.rand(C, generator=g, dtype=torch.float64) + 0.2
    M = torch.randn(C, K, generator=g, dtype=torch.float64) * spread
    S = torch.rand(C, K, generator=g, dtype=torch.float64) + 0.5
    return xf.MixturePrior((w / w.sum()).to(dtype), M.to(dtype), S.to(dtype)).to(device)


def make_inputs(B, C, K, device="cpu", dtype=torch.float64, seed=1, requires_grad=True):
    """mu, logvar (B, K) and logits (B, C)."""
    g = torch.Generator().manual_seed(seed)
    mu = torch.randn(B, K, generator=g, dtype=torch.float64)
    lv = torch.randn(B, K, generator=g, dtype=torch.float64) * 0.5
    l = torch.randn(B, C, generator=g, dtype=torch.float64) * 2
    return tuple(t.to(device=device, dtype=dtype).requires_grad_(requires_grad) for t in (mu, lv, l))


def as_ref(*ts):
    """float64 leaf copies of (possibly low-precision) inputs, for the reference."""
    return tuple(t.detach().double().requires_grad_() for t in ts)


def close(a, b, dtype, name, scale=None):
    tol = TOLS[dtype]
    scale = max(1.0, b.abs().max().item() if b.numel() else 0.0) if scale is None else scale
    torch.testing.assert_close(a.double(), b, rtol=tol["rtol"], atol=tol["atol"] * scale, msg=name)


def upstream(outs, seed=5):
    """Random upstream gradients (float64) of the given outputs."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(o.shape, generator=g, dtype=torch.float64).to(o.device) for o in outs]


def weighted(outs, ws):
    return sum((o.double() * w).sum() for o, w in zip(outs, ws))


# (B, C, K): C != K, B = 1, K = 1, C = 1, vector-width tails on both axes.
SHAPES = [(1, 1, 1), (7, 3, 2), (33, 13, 5), (64, 100, 32), (9, 17, 1), (5, 8, 9), (1, 5, 3),
          (6, 1, 4), (40, 9, 16)]
DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_component_kl_parity(device, dtype, shape):
    B, C, K = shape
    prior = make_prior(C, K, device, _acc(dtype))
    mu, lv, _ = make_inputs(B, C, K, device, dtype)
    D = xf.component_kl(mu, lv, prior)
    rmu, rlv = as_ref(mu, lv)
    rD = R.component_kl(rmu, rlv, prior)
    assert D.shape == (B, C) and D.dtype == dtype and not D.isnan().any()
    close(D, rD, dtype, "D")
    (w,) = upstream([D])
    got = torch.autograd.grad(weighted([D], [w]), (mu, lv))
    want = torch.autograd.grad((rD * w).sum(), (rmu, rlv))
    for name, a, b in zip(("mu", "logvar"), got, want):
        assert a.dtype == dtype and a.shape == (B, K), name
        close(a, b, dtype, name)


@pytest.mark.parametrize("return_weights", [False, True])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_mixture_bound_parity(device, dtype, shape, kind, reduction, return_weights):
    B, C, K = shape
    prior = make_prior(C, K, device, _acc(dtype))
    mu, lv, l = make_inputs(B, C, K, device, dtype)
    logits = l if kind == "mixture" else None
    out = xf.mixture_bound(mu, lv, prior, kind, logits, reduction, return_weights)
    rmu, rlv, rl = as_ref(mu, lv, l)
    ref = R.mixture_bound(rmu, rlv, prior, kind, rl if kind == "mixture" else None, reduction,
                          return_weights)
    assert len(out) == (4 if return_weights else 3)
    shape_out = (B,) if reduction == "none" else ()
    for name, a, b in zip(("total", "categorical", "gaussian"), out, ref):
        assert a.shape == shape_out and a.dtype == dtype, name
        close(a, b, dtype, name)
    if return_weights:
        r = out[3]
        assert r.shape == (B, C) and r.dtype == dtype and not r.requires_grad
        close(r, ref[3], dtype, "weights", scale=1.0)
    # Upstream gradients on all three outputs at once.
    ws = upstream(out[:3])
    ins = (mu, lv, l) if kind == "mixture" else (mu, lv)
    rins = (rmu, rlv, rl) if kind == "mixture" else (rmu, rlv)
    got = torch.autograd.grad(weighted(out[:3], ws), ins)
    want = torch.autograd.grad(weighted(ref[:3], ws), rins)
    for name, a, b in zip(("mu", "logvar", "logits"), got, want):
        assert a.dtype == dtype and a.shape == b.shape, name
        close(a, b, dtype, name)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("part", [0, 1, 2])
def test_gradient_of_each_output_alone(device, kind, part):
    # One output differentiated at a time (the others' upstream gradients are None in the backward).
    prior = make_prior(6, 4, device)
    mu, lv, l = make_inputs(10, 6, 4, device)
    logits = l if kind == "mixture" else None
    ins = (mu, lv, l) if kind == "mixture" else (mu, lv)
    out = xf.mixture_bound(mu, lv, prior, kind, logits, "none")
    rmu, rlv, rl = as_ref(mu, lv, l)
    rins = (rmu, rlv, rl) if kind == "mixture" else (rmu, rlv)
    ref = R.mixture_bound(rmu, rlv, prior, kind, rl if kind == "mixture" else None, "none")
    (w,) = upstream([out[part]])
    got = torch.autograd.grad((out[part] * w).sum(), ins)
    # (the mixture's categorical part does not depend on mu and logvar: zero gradients)
    want = torch.autograd.grad((ref[part] * w).sum(), rins, allow_unused=True)
    for a, b, x in zip(got, want, rins):
        torch.testing.assert_close(a, torch.zeros_like(x) if b is None else b, rtol=1e-10, atol=1e-12)


def test_parts_and_weights():
    prior = make_prior(7, 5)
    mu, lv, l = make_inputs(20, 7, 5, requires_grad=False)
    for kind, logits in (("tight", None), ("mixture", l)):
        total, cat, gauss, r = xf.mixture_bound(mu, lv, prior, kind, logits, "none", True)
        torch.testing.assert_close(total, cat + gauss, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(r.sum(1), torch.ones(20, dtype=torch.float64))
        assert (cat >= -1e-12).all() and (gauss >= 0).all()  # KL(r || pi) >= 0 and D >= 0
        three = xf.mixture_bound(mu, lv, prior, kind, logits, "none")
        assert len(three) == 3 and all(torch.equal(a, b) for a, b in zip(three, (total, cat, gauss)))
    torch.testing.assert_close(r, R.responsibility_rows(l), rtol=1e-12, atol=1e-14)
    # tight is the smallest mixture bound: Lemma 1 at its optimal weights.
    t_tight = xf.mixture_bound(mu, lv, prior, "tight", reduction="none")[0]
    assert (t_tight <= total + 1e-12).all()
    # The tight weights are the softmax of log pi - D.
    D = xf.component_kl(mu, lv, prior)
    r_tight = xf.mixture_bound(mu, lv, prior, "tight", return_weights=True)[3]
    torch.testing.assert_close(r_tight, torch.softmax(torch.log(prior.weights)[None] - D, 1))


@pytest.mark.parametrize("reduction", ["none", "mean"])
@pytest.mark.parametrize("kind", ["tight", "mixture", "component"])
def test_gradcheck(device, kind, reduction):
    prior = make_prior(4, 3, device, seed=2)
    mu, lv, l = make_inputs(5, 4, 3, device, seed=3)
    if kind == "component":
        assert torch.autograd.gradcheck(lambda m, v: xf.component_kl(m, v, prior), (mu, lv))
        return
    if kind == "mixture":
        f = lambda m, v, a: xf.mixture_bound(m, v, prior, "mixture", a, reduction)  # noqa: E731
        assert torch.autograd.gradcheck(f, (mu, lv, l))
    else:
        f = lambda m, v: xf.mixture_bound(m, v, prior, "tight", None, reduction)  # noqa: E731
        assert torch.autograd.gradcheck(f, (mu, lv))


def test_opcheck(device):
    B, C, K = 10, 7, 3
    prior = make_prior(C, K, device, torch.float32)
    mu, lv, l = make_inputs(B, C, K, device, torch.float32)
    _, logw, M, S, _, _ = prior.tensors_for(torch.float32, device)
    torch.library.opcheck(ops.component_kl, (mu, lv, M, S))
    for red in (0, 1, 2):
        for rw in (False, True):
            torch.library.opcheck(ops.mixture_bound, (mu, lv, logw, M, S, None, "tight", red, rw))
            torch.library.opcheck(ops.mixture_bound, (mu, lv, logw, M, S, l, "mixture", red, rw))
    md, lvd, ld = (t.detach() for t in (mu, lv, l))
    torch.library.opcheck(ops.component_kl_backward, (torch.randn(B, C, device=device), md, lvd, M, S))
    for red in (0, 1):
        shape = (B,) if red == 0 else ()
        g = [torch.randn(shape, device=device) for _ in range(3)]
        for kind, logits in (("tight", None), ("mixture", ld)):
            kl = ops.mixture_bound(md, lvd, logw, M, S, logits, kind, red, False)[4]
            torch.library.opcheck(ops.mixture_bound_backward,
                                  (*g, md, lvd, logw, M, S, logits, kl, kind, red))


def test_compile_fullgraph_matches_eager(device):
    torch._dynamo.reset()
    prior = make_prior(6, 5, device, torch.float32, seed=4)
    mu, lv, l = make_inputs(24, 6, 5, device, torch.float32, seed=6, requires_grad=False)

    def loss(mu, lv, l):
        t, c, g = xf.mixture_bound(mu, lv, prior, "tight")
        tm, cm, gm, r = xf.mixture_bound(mu, lv, prior, "mixture", l, "none", return_weights=True)
        D = xf.component_kl(mu, lv, prior)
        return t + 0.5 * c - 0.25 * g + (tm * r[:, 0]).mean() + 0.1 * cm.sum() + gm.mean() + (D * D).mean()

    ins = [t.clone().requires_grad_() for t in (mu, lv, l)]
    ins_c = [t.clone().requires_grad_() for t in (mu, lv, l)]
    out = loss(*ins)
    out_c = torch.compile(loss, fullgraph=True)(*ins_c)
    torch.testing.assert_close(out_c, out)
    for a, b in zip(torch.autograd.grad(out_c, ins_c), torch.autograd.grad(out, ins)):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("kind", ["tight", "mixture", "component"])
def test_fuzzed_range_finite_and_exact(device, kind, seed):
    # The documented input range: logvar in [-10, 10], mu up to 1e3 from the means, logits in
    # [-100, 100]; outputs and gradients finite and equal to the reference in float64.
    g = torch.Generator().manual_seed(100 + seed)
    B, C, K = 19, 11, 7
    prior = make_prior(C, K, device, seed=seed, spread=3.0)
    comp = torch.randint(0, C, (B,), generator=g)
    offset = (torch.rand(B, K, generator=g, dtype=torch.float64) * 2 - 1) * 10.0 ** torch.randint(
        -3, 4, (B, 1), generator=g)
    mu = (prior.means.cpu()[comp] + offset).to(device).requires_grad_()
    lv = ((torch.rand(B, K, generator=g, dtype=torch.float64) * 20 - 10)).to(device).requires_grad_()
    l = ((torch.rand(B, C, generator=g, dtype=torch.float64) * 200 - 100)).to(device)
    l[::3] = l[::3] - 100  # rows whose logits are all far below 0
    l = l.clamp(-100, 100).requires_grad_()
    rmu, rlv, rl = as_ref(mu, lv, l)
    if kind == "component":
        out, ref = (xf.component_kl(mu, lv, prior),), (R.component_kl(rmu, rlv, prior),)
        ins, rins = (mu, lv), (rmu, rlv)
    else:
        logits, rlogits = (l, rl) if kind == "mixture" else (None, None)
        out = xf.mixture_bound(mu, lv, prior, kind, logits, "none")
        ref = R.mixture_bound(rmu, rlv, prior, kind, rlogits, "none")
        ins, rins = ((mu, lv, l), (rmu, rlv, rl)) if kind == "mixture" else ((mu, lv), (rmu, rlv))
    for a, b in zip(out, ref):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9 * max(1.0, b.abs().max().item()))
    ws = upstream(out, seed=seed)
    got = torch.autograd.grad(weighted(out, ws), ins)
    want = torch.autograd.grad(weighted(ref, ws), rins)
    for name, a, b in zip(("mu", "logvar", "logits"), got, want):
        assert torch.isfinite(a).all(), name
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-9 * max(1.0, b.abs().max().item()), msg=name)


def _far_case(seed=8, B=16, C=4, K=8):
    # Points and means near 1000 with std 0.01 (and posterior std ~0.01): every D term is O(1).
    g = torch.Generator().manual_seed(seed)
    M = 1000.0 + torch.randn(C, K, generator=g, dtype=torch.float64) * 0.02
    S = torch.full((C, K), 0.01, dtype=torch.float64) * (1 + 0.1 * torch.rand(C, K, generator=g))
    prior = xf.MixturePrior(torch.full((C,), 1.0 / C), M.float(), S.float())
    mu = (M[torch.arange(B) % C] + torch.randn(B, K, generator=g, dtype=torch.float64) * 0.01).float()
    lv = (2 * math.log(0.01) + 0.2 * torch.randn(B, K, generator=g, dtype=torch.float64)).float()
    return prior, mu, lv


def test_float32_keeps_precision_far_from_origin():
    prior, mu, lv = _far_case()
    prior64 = xf.MixturePrior(prior.weights.double(), prior.means.double(), prior.stds.double())
    mu32, lv32 = mu.clone().requires_grad_(), lv.clone().requires_grad_()
    mu64, lv64 = mu.double().requires_grad_(), lv.double().requires_grad_()
    D = xf.component_kl(mu32, lv32, prior)
    rD = R.component_kl(mu64, lv64, prior64)
    assert rD.abs().max() < 1e3  # O(1)..O(100) values: the test is about their digits
    torch.testing.assert_close(D.double(), rD, rtol=0, atol=2e-3)
    # The expanded-square form (two matrix products) in float32 misses by orders of magnitude.
    _, _, M, S, _, _ = prior.tensors_for(torch.float32, "cpu")
    P = 1 / (S * S)
    e = torch.exp(lv)
    gemm = 0.5 * ((e + mu * mu) @ P.t() - 2 * mu @ (M * P).t() + (M * M * P).sum(1)[None]) + (
        torch.log(S).sum(1)[None] - 0.5 * lv.sum(1, keepdim=True) - 0.5 * M.shape[1])
    assert (gemm.double() - rD).abs().max() > 100 * 2e-3
    for kind in KINDS:
        logits = torch.zeros(mu.shape[0], 4) if kind == "mixture" else None
        t, c, gs = xf.mixture_bound(mu32, lv32, prior, kind, logits, "none")
        rt, rc, rg = R.mixture_bound(mu64, lv64, prior64, kind,
                                     None if logits is None else logits.double(), "none")
        for a, b in ((t, rt), (c, rc), (gs, rg)):
            torch.testing.assert_close(a.double(), b, rtol=0, atol=2e-3)
        # d total / d mu: terms (mu - M) / S^2 ~ 1e2; float32 keeps them to ~1e-5 relative.
        (gm,) = torch.autograd.grad(t.sum(), mu32)
        (rgm,) = torch.autograd.grad(rt.sum(), mu64)
        torch.testing.assert_close(gm.double(), rgm, rtol=1e-4, atol=1e-4 * rgm.abs().max().item())
    (gm,) = torch.autograd.grad(D.sum(), mu32)
    (rgm,) = torch.autograd.grad(rD.sum(), mu64)
    torch.testing.assert_close(gm.double(), rgm, rtol=1e-4, atol=1e-4 * rgm.abs().max().item())
    # and the factored gradient mu sum(w P) - sum(w M P) cancels there, as the test would see.
    w = torch.ones(mu.shape[0], 4)
    factored = mu * (w @ P) - w @ (M * P)
    assert (factored.double() - rgm).abs().max() > 1e-4 * rgm.abs().max().item() * 10


def test_zero_weight_component_is_ignored():
    # A component of weight 0 adds nothing to the tight bound (its r* is exactly 0).
    prior = make_prior(4, 3, seed=9)
    extra = xf.MixturePrior(torch.cat([prior.weights, torch.zeros(1, dtype=torch.float64)]),
                            torch.cat([prior.means, torch.full((1, 3), 0.3, dtype=torch.float64)]),
                            torch.cat([prior.stds, torch.ones(1, 3, dtype=torch.float64)]))
    mu, lv, _ = make_inputs(10, 4, 3, seed=10)
    out = xf.mixture_bound(mu, lv, extra, "tight", reduction="none", return_weights=True)
    want = xf.mixture_bound(mu, lv, prior, "tight", reduction="none", return_weights=True)
    for a, b in zip(out[:3], want[:3]):
        torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-13)
    assert (out[3][:, -1] == 0).all()
    ga = torch.autograd.grad(sum(o.sum() for o in out[:3]), (mu, lv))
    gb = torch.autograd.grad(sum(o.sum() for o in want[:3]), (mu, lv))
    for a, b in zip(ga, gb):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("kind", ["tight", "mixture", "component"])
def test_gradients_independent_of_thread_count(kind):
    B, C, K = 700, 37, 13
    prior = make_prior(C, K, dtype=torch.float32, seed=11)
    mu, lv, l = make_inputs(B, C, K, dtype=torch.float32, seed=12)
    n = torch.get_num_threads()
    try:
        results = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            if kind == "component":
                outs, ins = (xf.component_kl(mu, lv, prior),), (mu, lv)
            else:
                outs = xf.mixture_bound(mu, lv, prior, kind, l if kind == "mixture" else None, "mean",
                                        return_weights=True)
                ins = (mu, lv, l) if kind == "mixture" else (mu, lv)
            ws = upstream(outs[:3], seed=13)
            grads = torch.autograd.grad(weighted(outs[:3], ws), ins)
            results.append((*outs, *grads))
    finally:
        torch.set_num_threads(n)
    assert len(results[0]) >= 3
    for a, b in zip(*results):
        assert torch.equal(a, b)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_empty_batch(device, reduction):
    prior = make_prior(3, 2, device)
    mu, lv, l = make_inputs(0, 3, 2, device)
    D = xf.component_kl(mu, lv, prior)
    assert D.shape == (0, 3)
    assert all(g.shape == (0, 2) for g in torch.autograd.grad(D.sum(), (mu, lv)))
    for kind, logits in (("tight", None), ("mixture", l)):
        out = xf.mixture_bound(mu, lv, prior, kind, logits, reduction, return_weights=True)
        ref = R.mixture_bound(mu, lv, prior, kind, logits, reduction, return_weights=True)
        for a, b in zip(out, ref):
            assert a.shape == b.shape
            assert torch.equal(a.detach(), b.detach())
        ins = (mu, lv, l) if kind == "mixture" else (mu, lv)
        grads = torch.autograd.grad(sum(o.sum() for o in out[:3]), ins)
        assert [g.shape for g in grads] == [t.shape for t in ins]


def test_noncontiguous_inputs(device):
    prior = make_prior(5, 4, device)
    g = torch.Generator().manual_seed(14)
    mu = torch.randn(4, 11, generator=g, dtype=torch.float64).to(device).t()
    lv = (0.3 * torch.randn(4, 11, generator=g, dtype=torch.float64)).to(device).t()
    l = torch.randn(5, 11, generator=g, dtype=torch.float64).to(device).t()
    assert not mu.is_contiguous() and not l.is_contiguous()
    assert torch.equal(xf.component_kl(mu, lv, prior),
                       xf.component_kl(mu.contiguous(), lv.contiguous(), prior))
    for kind, logits in (("tight", None), ("mixture", l)):
        a = xf.mixture_bound(mu, lv, prior, kind, logits, "none", True)
        b = xf.mixture_bound(mu.contiguous(), lv.contiguous(), prior, kind,
                             None if logits is None else logits.contiguous(), "none", True)
        assert all(torch.equal(x, y) for x, y in zip(a, b))
    # A non-contiguous upstream gradient (expanded) in the backward.
    mu_g = mu.detach().clone().requires_grad_()
    D = xf.component_kl(mu_g, lv, prior)
    (ga,) = torch.autograd.grad(D, mu_g, torch.ones(1, 1, dtype=torch.float64, device=device).expand(11, 5),
                                retain_graph=True)
    (gb,) = torch.autograd.grad(D.sum(), mu_g)
    assert torch.equal(ga, gb)


def test_bad_inputs():
    prior = make_prior(3, 2)
    mu, lv, l = make_inputs(5, 3, 2, requires_grad=False)
    f = xf.mixture_bound
    with pytest.raises(TypeError, match="prior must be an xvae_fast.MixturePrior"):
        f(mu, lv, "prior")
    with pytest.raises(TypeError, match="mu must be a torch.Tensor"):
        f(mu.tolist(), lv, prior)
    with pytest.raises(TypeError, match="mu must be float32"):
        xf.component_kl(mu.long(), lv, prior)
    with pytest.raises(ValueError, match="mu has 3 latent coordinates, but the prior has K = 2"):
        f(torch.zeros(5, 3, dtype=torch.float64), lv, prior)
    with pytest.raises(ValueError, match=r"logvar has shape \(4, 2\) but mu has \(5, 2\)"):
        xf.component_kl(mu, lv[:4], prior)
    with pytest.raises(TypeError, match="logvar has dtype torch.float32 but mu has torch.float64"):
        f(mu, lv.float(), prior)
    with pytest.raises(ValueError, match="logvar is on meta but mu is on cpu"):
        f(mu, lv.to("meta"), prior)
    with pytest.raises(ValueError, match="the prior is on cpu but mu is on meta"):
        xf.component_kl(mu.to("meta"), lv.to("meta"), prior)
    with pytest.raises(ValueError, match="kind must be one of"):
        f(mu, lv, prior, "paper")
    with pytest.raises(ValueError, match="reduction must be one of"):
        f(mu, lv, prior, "tight", reduction="avg")
    with pytest.raises(ValueError, match="kind 'mixture' .* pass logits"):
        f(mu, lv, prior, "mixture")
    with pytest.raises(ValueError, match="kind 'tight' .* takes no logits"):
        f(mu, lv, prior, "tight", l)
    with pytest.raises(ValueError, match=r"logits must have shape \(B, C\) = \(5, 3\), got \(5, 2\)"):
        f(mu, lv, prior, "mixture", l[:, :2])
    with pytest.raises(TypeError, match="logits has dtype torch.float32 but mu has torch.float64"):
        f(mu, lv, prior, "mixture", l.float())
    with pytest.raises(ValueError, match="logits is on meta but mu is on cpu"):
        f(mu, lv, prior, "mixture", l.to("meta"))
    with pytest.raises(TypeError, match="logits must be float32"):
        f(mu, lv, prior, "mixture", l.long())


def test_bad_inputs_raw_ops():
    # Direct torch.ops calls check their arguments themselves, naming them.
    prior = make_prior(3, 2)
    mu, lv, l = make_inputs(5, 3, 2, requires_grad=False)
    _, logw, M, S, _, _ = prior.tensors_for(torch.float64, "cpu")
    with pytest.raises(RuntimeError, match=r"means must be \(C, K\) with C >= 1 and K = 2"):
        ops.component_kl(mu, lv, M[:, :1], S)
    with pytest.raises(RuntimeError, match=r"means must be \(C, K\)"):
        ops.component_kl(mu, lv, M[:0], S[:0])
    with pytest.raises(RuntimeError, match="stds has shape"):
        ops.component_kl(mu, lv, M, S[:2])
    with pytest.raises(RuntimeError, match="stds must be Double for Double inputs, got Float"):
        ops.component_kl(mu, lv, M, S.float())
    with pytest.raises(RuntimeError, match="logvar has shape"):
        ops.component_kl(mu, lv[:3], M, S)
    with pytest.raises(RuntimeError, match="mu must be 2-D"):
        ops.component_kl(mu[0], lv[0], M, S)
    with pytest.raises(RuntimeError, match=r"grad must be \(B, C\) = \(5, 3\)"):
        ops.component_kl_backward(torch.ones(5, 2, dtype=torch.float64), mu, lv, M, S)
    mb = ops.mixture_bound
    with pytest.raises(RuntimeError, match="kind must be 'tight' or 'mixture', got 'paper'"):
        mb(mu, lv, logw, M, S, None, "paper", 1, False)
    with pytest.raises(RuntimeError, match="kind 'mixture' needs logits"):
        mb(mu, lv, logw, M, S, None, "mixture", 1, False)
    with pytest.raises(RuntimeError, match="kind 'tight' takes no logits"):
        mb(mu, lv, logw, M, S, l, "tight", 1, False)
    with pytest.raises(RuntimeError, match=r"logits must be \(B, C\) = \(5, 3\)"):
        mb(mu, lv, logw, M, S, l[:, :2], "mixture", 1, False)
    with pytest.raises(RuntimeError, match="logits has dtype Float, expected Double"):
        mb(mu, lv, logw, M, S, l.float(), "mixture", 1, False)
    with pytest.raises(RuntimeError, match=r"log_weights has shape \[2\], expected \[3\]"):
        mb(mu, lv, logw[:2], M, S, None, "tight", 1, False)
    with pytest.raises(RuntimeError, match="reduction code must be 0"):
        mb(mu, lv, logw, M, S, None, "tight", 3, False)
    kl = mb(mu, lv, logw, M, S, None, "tight", 0, False)[4]
    g = torch.ones(5, dtype=torch.float64)
    mbb = ops.mixture_bound_backward
    with pytest.raises(RuntimeError, match=r"kl must be \(B, C\) = \(5, 3\)"):
        mbb(g, g, g, mu, lv, logw, M, S, None, kl[:, :2], "tight", 0)
    with pytest.raises(RuntimeError, match=r"grad_categorical must have shape \(5,\)"):
        mbb(g, g[:4], g, mu, lv, logw, M, S, None, kl, "tight", 0)
    with pytest.raises(RuntimeError, match="grad_gaussian must be a scalar"):
        mbb(g[0], g[0], g, mu, lv, logw, M, S, None, kl, "tight", 1)
    with pytest.raises(RuntimeError, match="kind 'mixture' needs logits"):
        mbb(g, g, g, mu, lv, logw, M, S, None, kl, "mixture", 0)


def test_bench_cases_run(tmp_path):
    # bench/run.py times the new ops against the plain-PyTorch peers (and the expanded-square form).
    import json
    import pathlib
    import subprocess
    import sys
    bench = pathlib.Path(__file__).resolve().parents[1] / "bench" / "run.py"
    out = subprocess.run(
        [sys.executable, str(bench), "--ops", "component_kl", "mixture_bound:tight", "mixture_bound:mixture",
         "--B", "16", "--K", "3", "--dtypes", "float32", "--repeats", "1", "--no-compile", "--no-e2e",
         "--out", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = json.loads((tmp_path / "full-cpu.json").read_text())["results"]
    assert {(r["op"], r["pass_"]) for r in rows} == {
        (op, p) for op in ("component_kl", "mixture_bound:tight", "mixture_bound:mixture")
        for p in ("fwd", "fwd+bwd")}
    assert all(r["fused_ms"] > 0 and r["eager_ms"] > 0 and r["gemm_eager_ms"] > 0 for r in rows)
    md = (tmp_path / "full-cpu.md").read_text()
    assert "| mixture_bound:tight | float32 | 16 | 3 | fwd+bwd |" in md and "Expanded-square" in md
