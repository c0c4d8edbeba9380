"""The numerical edges of the public ops (issue 14): gradients as robust as values over the documented
ranges, no intermediate overflow where the value is finite, the prior's std range per dtype, the
dtype-scaled weight tolerance, and the opt-in NaN scan."""
import math

import pytest
import torch

import xvae_fast as xf
from xvae_fast import reference as R
from xvae_fast.ops._validation import STD_RANGE

from conftest import make_prior


def _grad(fn, *ins):
    ins = [t.detach().clone().requires_grad_() for t in ins]
    out = fn(*ins)
    out = out if isinstance(out, tuple) else (out,)
    total = sum((o.double() * (1 + torch.arange(o.numel(), dtype=torch.float64).reshape(o.shape) % 3)).sum()
                for o in out)
    grads = torch.autograd.grad(total, ins, allow_unused=True)
    return out, tuple(g for g in grads if g is not None)


# -- responsibilities: the backward is as robust as the forward ------------------------------------

@pytest.mark.parametrize("impl", ["fused", "reference"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_responsibilities_gradient_finite_at_large_logits(impl, dtype):
    fn = xf.responsibilities if impl == "fused" else R.responsibilities
    big = 100.0 if dtype == torch.float32 else 1e4
    one_hot = torch.zeros(1, 4, dtype=dtype)
    one_hot[0, 0] = big
    spread = torch.randn(128, 8, generator=torch.Generator().manual_seed(0), dtype=dtype) * 30
    extremes = torch.tensor([[big, -big, 0.0, 89.0], [-big, -big, -99.0, -89.0]], dtype=dtype)
    for l in (one_hot, spread, extremes):
        out, (g,) = _grad(fn, l)
        assert torch.isfinite(out[0]).all() and torch.isfinite(g).all(), l
    # The gradient is right where it is finite: against float64 finite differences on the spread case.
    l = (torch.randn(6, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 30)
    l[0, 0] = 95.0
    assert torch.autograd.gradcheck(fn, (l.requires_grad_(),))


@pytest.mark.parametrize("seed", range(3))
def test_mixture_kl_gradients_fuzzed_over_the_documented_range(seed):
    # logits in [-100, 100] (rows all far below 0 too), logvar in [-10, 10], mu up to 1e3 off the
    # prior means, prior stds over [1e-3, 1e3]: values and all gradients finite in float32, and equal
    # to the reference in float64.
    g = torch.Generator().manual_seed(200 + seed)
    B, K = 23, 9
    w = torch.rand(K, generator=g, dtype=torch.float64) + 0.1
    M = torch.randn(K, K, generator=g, dtype=torch.float64) * 10
    S = 10.0 ** (torch.rand(K, K, generator=g, dtype=torch.float64) * 6 - 3)
    prior = xf.MixturePrior(w / w.sum(), M, S)
    l = torch.rand(B, K, generator=g, dtype=torch.float64) * 200 - 100
    l[::4] = -100 + torch.rand(l[::4].shape, generator=g, dtype=torch.float64)
    mu = torch.diagonal(M)[None] + (torch.rand(B, K, generator=g, dtype=torch.float64) * 2 - 1) * \
        10.0 ** torch.randint(-3, 4, (B, 1), generator=g)
    lv = torch.rand(B, K, generator=g, dtype=torch.float64) * 20 - 10

    def fused(l, mu, lv):
        return xf.mixture_kl(l, mu, lv, prior, "none")

    def ref(l, mu, lv):
        return R.mixture_kl(l, mu, lv, prior, "none")

    out, grads = _grad(fused, l, mu, lv)
    rout, rgrads = _grad(ref, l, mu, lv)
    for a, b in zip(out + grads, rout + rgrads):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-9 * max(1.0, b.abs().max().item()))
    out32, grads32 = _grad(fused, l.float(), mu.float(), lv.float())
    for a in out32 + grads32:
        assert torch.isfinite(a).all()


@pytest.mark.parametrize("seed", range(3))
def test_gaussian_kl_routed_transport_and_log_prob_gradients_fuzzed(seed):
    g = torch.Generator().manual_seed(300 + seed)
    B, K = 17, 6
    m = torch.randn(K, generator=g, dtype=torch.float64) * 10
    s = 10.0 ** (torch.rand(K, generator=g, dtype=torch.float64) * 6 - 3)
    mu = m[None] + (torch.rand(B, K, generator=g, dtype=torch.float64) * 2 - 1) * 1e3
    lv = torch.rand(B, K, generator=g, dtype=torch.float64) * 20 - 10
    for dtype in (torch.float64, torch.float32):
        out, grads = _grad(lambda a, b: xf.gaussian_kl(a, b, m.to(dtype), s.to(dtype)), mu.to(dtype), lv.to(dtype))
        for t in out + grads:
            assert torch.isfinite(t).all(), dtype
        if dtype == torch.float64:
            rout, rgrads = _grad(lambda a, b: R.gaussian_kl(a, b, m, s), mu, lv)
            for a, b in zip(out + grads, rout + rgrads):
                torch.testing.assert_close(a, b, rtol=1e-9, atol=0.0)
    prior = make_prior(K, seed=seed)
    for dtype in (torch.float64, torch.float32):
        gen = torch.Generator().manual_seed(seed)
        z, grads = _grad(lambda a, b: xf.routed_transport(a, b, prior, "full", generator=gen),
                         mu.to(dtype), lv.to(dtype))
        assert all(torch.isfinite(t).all() for t in z + grads)
    # mixture_log_prob: z up to 1e3 off the means, log-variances in [-10, 10].
    C = 5
    lw = torch.log_softmax(torch.randn(C, generator=g, dtype=torch.float64), 0)
    means = torch.randn(C, K, generator=g, dtype=torch.float64)
    lvs = torch.rand(C, K, generator=g, dtype=torch.float64) * 20 - 10
    z = (torch.rand(B, K, generator=g, dtype=torch.float64) * 2 - 1) * 1e3
    for dtype in (torch.float64, torch.float32):
        ins = [t.to(dtype) for t in (z, lw, means, lvs)]
        out, grads = _grad(lambda *a: xf.mixture_log_prob(*a, return_responsibilities=True), *ins)
        assert all(torch.isfinite(t).all() for t in out + grads), dtype
        if dtype == torch.float64:
            rout, rgrads = _grad(lambda *a: R.mixture_log_prob(*a, return_responsibilities=True), *ins)
            for a, b in zip(out + grads, rout + rgrads):
                torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-9 * max(1.0, b.abs().max().item()))


# -- no intermediate overflow ------------------------------------------------------------------------

@pytest.mark.parametrize("impl", ["fused", "reference"])
def test_gaussian_kl_finite_at_logvar_89_in_float32(impl):
    # 0.5 * exp(89) = 2.2e38 < float32 max 3.4e38, but exp(89) alone overflows.
    fn = xf.gaussian_kl if impl == "fused" else R.gaussian_kl
    lv = torch.tensor([[89.0], [88.9], [-89.0]], requires_grad=True)
    mu = torch.zeros(3, 1)
    val = fn(mu, lv, torch.zeros(1), torch.ones(1))
    exact = torch.tensor([0.5 * math.exp(x) - 0.5 * x - 0.5 for x in (89.0, 88.9, -89.0)], dtype=torch.float64)
    assert torch.isfinite(val).all()
    torch.testing.assert_close(val.double(), exact, rtol=1e-5, atol=1e-5)
    (g,) = torch.autograd.grad(val.sum(), lv)
    assert torch.isfinite(g).all()
    torch.testing.assert_close(g.double()[:, 0], torch.tensor([0.5 * math.exp(x) - 0.5 for x in (89.0, 88.9, -89.0)],
                                                              dtype=torch.float64), rtol=1e-5, atol=1e-6)
    # Same in the mixture KL (one shared formula).
    prior = xf.MixturePrior.single(torch.zeros(1), torch.ones(1))
    total, _, gauss = xf.mixture_kl(torch.zeros(3, 1), mu, lv.detach(), prior, "none")
    assert torch.isfinite(gauss).all()
    torch.testing.assert_close(gauss.double(), exact, rtol=1e-5, atol=1e-5)


# -- the prior's std range per dtype -----------------------------------------------------------------

@pytest.mark.parametrize("std", [1e-30, 1e-45, 1e-10, 2e9, 1e30])
def test_mixture_prior_rejects_stds_outside_the_float32_range(std):
    with pytest.raises(ValueError, match=r"stds must lie in \[1e-09, 1e\+09\]"):
        xf.MixturePrior.single(torch.zeros(3), torch.full((3,), std))


def test_float64_prior_range_and_its_use_with_float32_inputs():
    lo64, hi64 = STD_RANGE[torch.float64]
    with pytest.raises(ValueError, match="stds must lie in"):
        xf.MixturePrior.single(torch.zeros(2, dtype=torch.float64), torch.full((2,), lo64 / 10, dtype=torch.float64))
    p = xf.MixturePrior.single(torch.zeros(2, dtype=torch.float64), torch.full((2,), 1e-30, dtype=torch.float64))
    mu = torch.zeros(4, 2, dtype=torch.float64)
    assert torch.isfinite(xf.component_kl(mu, mu - 70.0, p)).all()   # float64 inputs: inside its range
    with pytest.raises(ValueError, match="used with lower-precision inputs"):
        xf.component_kl(mu.float(), mu.float(), p)


def test_gaussian_kl_prior_std_range():
    mu = torch.zeros(2, 3)
    for bad in (1e-30, 1e-45, 1e12):
        with pytest.raises(ValueError, match=r"prior_std must lie in \[1e-09"):
            xf.gaussian_kl(mu, mu, torch.zeros(3), torch.full((3,), bad))
    with pytest.raises(ValueError, match="prior_std must be > 0"):
        xf.gaussian_kl(mu, mu, torch.zeros(3), torch.tensor([1.0, 0.0, 1.0]))
    with pytest.raises(ValueError, match="prior_std contains NaN"):
        xf.gaussian_kl(mu, mu, torch.zeros(3), torch.tensor([1.0, float("nan"), 1.0]))
    # float64 inputs have the wider range
    assert torch.isfinite(xf.gaussian_kl(mu.double(), mu.double(), torch.zeros(3, dtype=torch.float64),
                                         torch.full((3,), 1e-30, dtype=torch.float64))).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("edge", ["lo", "hi"])
def test_everything_finite_at_the_edges_of_the_std_range(dtype, edge):
    lo, hi = STD_RANGE[dtype]
    s = lo if edge == "lo" else hi
    K = 4
    g = torch.Generator().manual_seed(5)
    M = torch.randn(K, K, generator=g, dtype=dtype)
    prior = xf.MixturePrior(torch.full((K,), 1.0 / K, dtype=dtype), M, torch.full((K, K), s, dtype=dtype))
    B = 8
    # posteriors at the prior's own scale and at unit scale
    mu = torch.diagonal(M)[None] + s * torch.randn(B, K, generator=g, dtype=dtype)
    lv = torch.full((B, K), 2 * math.log(s), dtype=dtype)
    lv[::2] = 0.0
    if edge == "hi":
        mu[::2] = 0.0
    l = torch.randn(B, K, generator=g, dtype=dtype)
    checks = {
        "mixture_kl": lambda mu, lv, l: xf.mixture_kl(l, mu, lv, prior, "none"),
        "gaussian_kl": lambda mu, lv, l: xf.gaussian_kl(mu, lv, torch.diagonal(M), torch.diagonal(prior.stds)),
        "routed_transport": lambda mu, lv, l: xf.routed_transport(mu, lv, prior, "full",
                                                                  generator=torch.Generator().manual_seed(0)),
        "component_kl": lambda mu, lv, l: xf.component_kl(mu, lv, prior),
        "mixture_bound": lambda mu, lv, l: xf.mixture_bound(mu, lv, prior, "tight", reduction="none"),
    }
    for name, fn in checks.items():
        out, grads = _grad(fn, mu, lv, l)
        for t in out + grads:
            assert torch.isfinite(t).all(), name
    assert torch.isfinite(xf.sample_prior(prior, 16, generator=torch.Generator().manual_seed(0))).all()


# -- the weight tolerance scales with the dtype the weights came in ----------------------------------

@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_mixture_prior_accepts_half_precision_thirds(dtype):
    w = torch.full((3,), 1.0 / 3.0, dtype=dtype)
    assert abs(w.double().sum().item() - 1.0) > 1e-5          # what the old float32 tolerance refused
    p = xf.MixturePrior(w, torch.zeros(3, 3), torch.ones(3, 3))
    assert p.weights.dtype == torch.float32


def test_mixture_prior_float32_tolerance_stays_tight():
    with pytest.raises(ValueError, match="must sum to 1"):
        xf.MixturePrior(torch.tensor([0.5, 0.4999]), torch.zeros(2, 3), torch.ones(2, 3))
    with pytest.raises(ValueError, match="must sum to 1"):   # float16 still refuses a real error
        xf.MixturePrior(torch.tensor([0.5, 0.49], dtype=torch.float16), torch.zeros(2, 3), torch.ones(2, 3))


# -- the opt-in NaN scan -----------------------------------------------------------------------------

def _nan_at(shape, where=(1, 2), value=float("nan")):
    t = torch.zeros(shape)
    t[where] = value
    return t


@pytest.mark.parametrize("bad", ["nan", "inf"])
def test_check_finite_names_the_argument_in_every_op(bad):
    v = float(bad)
    K = 4
    prior = make_prior(K, dtype=torch.float32)
    ok = torch.zeros(5, K)
    cases = [
        ("logits", lambda: xf.responsibilities(_nan_at((5, K), value=v), check_finite=True)),
        ("logits", lambda: xf.mixture_kl(_nan_at((5, K), value=v), ok, ok, prior, check_finite=True)),
        ("mu", lambda: xf.mixture_kl(ok, _nan_at((5, K), value=v), ok, prior, check_finite=True)),
        ("logvar", lambda: xf.mixture_kl(ok, ok, _nan_at((5, K), value=v), prior, check_finite=True)),
        ("mu", lambda: xf.gaussian_kl(_nan_at((5, K), value=v), ok, torch.zeros(K), torch.ones(K),
                                      check_finite=True)),
        ("logvar", lambda: xf.routed_transport(ok, _nan_at((5, K), value=v), prior, check_finite=True)),
        ("mu", lambda: xf.component_kl(_nan_at((5, K), value=v), ok, prior, check_finite=True)),
        ("logits", lambda: xf.mixture_bound(ok, ok, prior, "mixture", _nan_at((5, K), value=v),
                                            check_finite=True)),
        ("z", lambda: xf.mixture_log_prob(_nan_at((5, K), value=v), torch.log(prior.weights), prior.means,
                                          2 * torch.log(prior.stds), check_finite=True)),
    ]
    for name, call in cases:
        with pytest.raises(ValueError, match=rf"^{name} contains NaN or inf"):
            call()


def test_without_check_finite_nan_propagates_and_costs_no_scan():
    # The default is documented: no scan, NaN in gives NaN out (the trainer checks its loss terms).
    K = 3
    prior = make_prior(K, dtype=torch.float32)
    mu = _nan_at((4, K))
    total, _, _ = xf.mixture_kl(torch.zeros(4, K), mu, torch.zeros(4, K), prior, "none")
    assert torch.isnan(total[1]) and torch.isfinite(total[[0, 2, 3]]).all()
