"""kde_log_prob: parity with the direct formula (float64 to 1e-10, float32, bfloat16), gradients
(gradcheck, fuzzed over the documented range, the closed form), opcheck of the op it runs,
torch.compile, bad inputs, and the laws of SPEC-related 2.5 (normalised, order-invariant,
leave-one-out drops exactly the i = j term, no gradient to the centres)."""
import inspect
import math

import pytest
import torch

import xvae_fast as xf
from xvae_fast import reference as R

LOG_2PI = math.log(2 * math.pi)


def make_kde(N, m, d, device="cpu", dtype=torch.float64, seed=0, spread=1.0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(N, d, generator=g, dtype=torch.float64) * spread
    c = torch.randn(m, d, generator=g, dtype=torch.float64) * spread
    return z.to(device=device, dtype=dtype), c.to(device=device, dtype=dtype)


def direct_formula(z, c, h, exclude_self=False):
    """The formula written out independently of the reference: per row, a Python-level loop over
    the centres in float64 with math.fsum of the shifted exponentials."""
    z, c = z.double().tolist(), c.double().tolist()
    d = len(c[0])
    out = []
    for i, zi in enumerate(z):
        s = [-sum((a - b) ** 2 for a, b in zip(zi, cj)) / (2 * h * h)
             for j, cj in enumerate(c) if not (exclude_self and j == i)]
        mx = max(s)
        out.append(mx + math.log(math.fsum(math.exp(x - mx) for x in s)) - math.log(len(s))
                   - d * math.log(h) - 0.5 * d * LOG_2PI)
    return torch.tensor(out, dtype=torch.float64)


# -- parity ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(1, 1, 1), (7, 3, 2), (13, 40, 5), (5, 9, 16), (4, 2, 128)])
@pytest.mark.parametrize("bw", ["float", "tensor"])
def test_float64_equals_the_direct_formula(device, shape, bw):
    N, m, d = shape
    z, c = make_kde(N, m, d, device, seed=N + m)
    h = 0.7 if bw == "float" else torch.tensor(0.7, dtype=torch.float64, device=device)
    want = direct_formula(z, c, 0.7)
    for fn in (xf.kde_log_prob, R.kde_log_prob):
        got = fn(z, c, h)
        assert got.shape == (N,) and got.dtype == torch.float64
        torch.testing.assert_close(got.cpu(), want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("dtype,tol,gtol", [(torch.float32, dict(rtol=1e-6, atol=2e-5), 1e-5),
                                            (torch.bfloat16, dict(rtol=1e-2, atol=0.1), 2e-2)])
def test_low_precision_parity(device, dtype, tol, gtol):
    # Against the float64 formula on the same (rounded) inputs (values here -10 to -40); bfloat16 also
    # rounds the output and the broadcast log-variance 2 log h to 8 bits (measured: 0.09 absolute,
    # gradients 0.5% of their largest).
    z, c = make_kde(33, 300, 16, device, dtype, seed=3)
    for h in (0.584, 2.0):
        got = xf.kde_log_prob(z, c, h)
        assert got.dtype == dtype
        want = R.kde_log_prob(z.double(), c.double(), h)
        torch.testing.assert_close(got.double(), want, **tol)
        zz = z.detach().clone().requires_grad_()
        (gz,) = torch.autograd.grad(xf.kde_log_prob(zz, c, h).float().sum(), zz)
        zr = z.double().requires_grad_()
        (gr,) = torch.autograd.grad(R.kde_log_prob(zr, c.double(), h).sum(), zr)
        torch.testing.assert_close(gz.double(), gr, rtol=0, atol=gtol * gr.abs().max().item())


def test_reference_agrees_with_torch_distributions():
    # An independent formulation of the same density: a uniform mixture of isotropic Normals.
    z, c = make_kde(20, 7, 3, seed=4)
    h = 0.45
    mix = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(logits=torch.zeros(7, dtype=torch.float64)),
        torch.distributions.Independent(torch.distributions.Normal(c, torch.full_like(c, h)), 1))
    torch.testing.assert_close(R.kde_log_prob(z, c, h), mix.log_prob(z), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(xf.kde_log_prob(z, c, h), mix.log_prob(z), rtol=1e-12, atol=1e-12)


def test_many_centres_use_the_tiled_path(device):
    # m d past one L2 tile (10^4-scale KDEs): the tiled online logsumexp, forward and backward.
    z, c = make_kde(11, 2500, 64, device, seed=5)
    zz = z.clone().requires_grad_()
    zr = z.clone().requires_grad_()
    got, want = xf.kde_log_prob(zz, c, 0.9), R.kde_log_prob(zr, c, 0.9)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-10)
    torch.testing.assert_close(torch.autograd.grad(got.sum(), zz)[0], torch.autograd.grad(want.sum(), zr)[0],
                               rtol=1e-10, atol=1e-12)
    lo_got = xf.kde_log_prob(c[:600], c[:600], 0.9, exclude_self=True)
    torch.testing.assert_close(lo_got, R.kde_log_prob(c[:600], c[:600], 0.9, exclude_self=True),
                               rtol=1e-12, atol=1e-10)


# -- gradients ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("exclude_self", [False, True])
def test_gradcheck_z(device, exclude_self):
    z, c = make_kde(6, 6, 3, device, seed=6)
    z.requires_grad_()
    assert torch.autograd.gradcheck(lambda z: xf.kde_log_prob(z, c, 0.8, exclude_self=exclude_self), (z,))
    assert torch.autograd.gradcheck(lambda z: R.kde_log_prob(z, c, 0.8, exclude_self=exclude_self), (z,))


def test_gradient_is_the_closed_form():
    # d log q / dz_i = -(z_i - sum_j r_ij c_j) / h^2, r the row softmax of -||z_i - c_j||^2 / (2 h^2).
    z, c = make_kde(9, 14, 4, seed=7)
    h = 0.6
    z.requires_grad_()
    (gz,) = torch.autograd.grad(xf.kde_log_prob(z, c, h).sum(), z)
    r = torch.softmax(-torch.cdist(z.detach(), c) ** 2 / (2 * h * h), dim=1)
    torch.testing.assert_close(gz, -(z.detach() - r @ c) / h ** 2, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_gradients_fuzzed_over_the_documented_range(seed):
    # |z|, |c| up to 1e3, h in [1e-2, 1e2] (log-uniform), d up to 128: values and gradients finite in
    # float32 and equal to the float64 reference in float64.
    g = torch.Generator().manual_seed(400 + seed)
    for d in (1, 7, 128):
        N, m = 5, 12
        scale = 10.0 ** torch.randint(-1, 4, (1,), generator=g).item()
        z = (torch.rand(N, d, generator=g, dtype=torch.float64) * 2 - 1) * scale
        c = (torch.rand(m, d, generator=g, dtype=torch.float64) * 2 - 1) * scale
        c[0] = z[0] + 1e-3 * torch.randn(d, generator=g, dtype=torch.float64)  # one close pair
        for h in (1e-2, 10 ** (torch.rand(1, generator=g).item() * 4 - 2), 1e2):
            for dtype in (torch.float32, torch.float64):
                zz = z.to(dtype).requires_grad_()
                out = xf.kde_log_prob(zz, c.to(dtype), h)
                (gz,) = torch.autograd.grad(out.sum(), zz)
                assert torch.isfinite(out).all() and torch.isfinite(gz).all(), (d, h, dtype)
                if dtype == torch.float64:
                    zr = z.clone().requires_grad_()
                    want = R.kde_log_prob(zr, c, h)
                    (gr,) = torch.autograd.grad(want.sum(), zr)
                    torch.testing.assert_close(out, want, rtol=1e-10, atol=1e-9)
                    torch.testing.assert_close(gz, gr, rtol=1e-8, atol=1e-9 * max(1.0, gr.abs().max().item()))


def test_float32_keeps_precision_far_from_origin():
    # Points and centres near 1e3 with h = 0.01: the expanded ||z||^2 - 2 z.c + ||c||^2 form loses every
    # digit in float32 here; the kernel's (z - c)^2 form keeps them.
    g = torch.Generator().manual_seed(8)
    c = 1000.0 + torch.randn(6, 8, generator=g, dtype=torch.float64) * 0.02
    z = c[torch.arange(12) % 6] + torch.randn(12, 8, generator=g, dtype=torch.float64) * 0.01
    z32, c32 = z.float(), c.float()
    want = R.kde_log_prob(z32.double(), c32.double(), 0.01)
    torch.testing.assert_close(xf.kde_log_prob(z32, c32, 0.01).double(), want, rtol=0, atol=2e-3)


def test_no_gradient_reaches_the_centres(device):
    z, c = make_kde(5, 4, 3, device, seed=9)
    c.requires_grad_()
    out = xf.kde_log_prob(z, c, 0.5)
    assert not out.requires_grad  # the centres are treated as detached
    z.requires_grad_()
    for fn in (xf.kde_log_prob, R.kde_log_prob):
        out = fn(z, c, 0.5)
        gz, gc = torch.autograd.grad(out.sum(), (z, c), allow_unused=True)
        assert gc is None and gz is not None and torch.isfinite(gz).all()


def test_nothing_of_size_n_by_m_is_allocated():
    # The scores live in per-thread tiles: the tensors one forward+backward allocates are the (N,)
    # outputs, the (N, d) gradient and scalars, far below one N x m float32 matrix.
    z, c = make_kde(64, 4000, 16, dtype=torch.float32, seed=11)
    z.requires_grad_()
    torch.autograd.grad(xf.kde_log_prob(z, c, 0.7).sum(), z)  # warm-up
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        torch.autograd.grad(xf.kde_log_prob(z, c, 0.7).sum(), z)
    allocated = sum(e.cpu_memory_usage for e in prof.events() if e.cpu_memory_usage > 0)
    assert allocated < 64 * 4000 * 4 // 8, allocated


# -- the expanded square and its direct fallback -----------------------------------------------------

def _kde_op(z, c, h, exclude_self=False):
    return torch.ops.xvae_fast.kde_log_prob(z, c, torch.tensor(h, dtype=torch.float64), exclude_self)


@pytest.mark.parametrize("dtype,rtol", [(torch.float32, 1e-6), (torch.float64, 1e-13)])
def test_expanded_square_serves_typical_inputs_exactly(device, dtype, rtol):
    # AVAE-like inputs (N(0, I) centres, points of variance 1 - h^2, the paper's bandwidths), here
    # off the origin by 3: every row takes the matrix-product form, as accurate as the direct form.
    for d, h in ((16, 0.584), (64, 0.714)):
        g = torch.Generator().manual_seed(d)
        c = torch.randn(3000, d, generator=g, dtype=torch.float64) + 3.0
        z = torch.randn(40, d, generator=g, dtype=torch.float64) * math.sqrt(1 - h * h) + 3.0
        lp, _, is_direct = _kde_op(z.to(device, dtype), c.to(device, dtype), h)
        assert not is_direct.any()
        want = R.kde_log_prob(z.to(dtype).double(), c.to(dtype).double(), h)
        torch.testing.assert_close(lp.double().cpu(), want, rtol=rtol, atol=0)


def test_far_apart_rows_fall_back_to_the_direct_form(device):
    # Two clusters 2000 apart with h = 0.01: the expanded square's error bound is ~1e10 times log q's
    # size, so those rows are computed as (z - c)^2 from the unshifted inputs, value and gradient,
    # while rows near the shift keep the fast form; float32 keeps float32's relative accuracy.
    g = torch.Generator().manual_seed(20)
    c = torch.cat([torch.randn(20, 8, generator=g, dtype=torch.float64) * 0.02 - 1000,
                   torch.randn(20, 8, generator=g, dtype=torch.float64) * 0.02 + 1000,
                   torch.randn(4, 8, generator=g, dtype=torch.float64) * 0.02])
    z = c[[0, 5, 25, 30, 40, 41]] + torch.randn(6, 8, generator=g, dtype=torch.float64) * 0.01
    for dtype, rtol, grtol in ((torch.float64, 1e-12, 1e-9), (torch.float32, 1e-5, 1e-3)):
        zz, cc = z.to(device, dtype).requires_grad_(), c.to(device, dtype)
        lp, _, is_direct = _kde_op(zz, cc, 0.01)
        assert is_direct.tolist() == [True, True, True, True, False, False]
        zr = zz.detach().double().requires_grad_()
        want = R.kde_log_prob(zr, cc.double(), 0.01)
        torch.testing.assert_close(lp.double(), want, rtol=rtol, atol=0)
        got_g = torch.autograd.grad(lp.sum(), zz)[0]
        want_g = torch.autograd.grad(want.sum(), zr)[0]
        torch.testing.assert_close(got_g.double(), want_g, rtol=grtol, atol=grtol * want_g.abs().max().item())
    # and the leave-one-out form with both kinds of rows
    lo = xf.kde_log_prob(c.to(device), c.to(device), 0.01, exclude_self=True)
    torch.testing.assert_close(lo.cpu(), direct_formula(c, c, 0.01, exclude_self=True), rtol=1e-12, atol=1e-9)


def test_results_do_not_depend_on_the_thread_count():
    z, c = make_kde(37, 1500, 24, dtype=torch.float32, seed=21)
    c[0] += 300.0  # a far centre with a point next to it: that row takes the direct form
    z[3] = c[0] + 0.01
    assert torch.ops.xvae_fast.kde_log_prob(z, c, torch.tensor(0.05), False)[2].nonzero().flatten().tolist() == [3]
    n = torch.get_num_threads()
    outs = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            zz = z.clone().requires_grad_()
            lp = xf.kde_log_prob(zz, c, 0.05)
            outs.append((lp, torch.autograd.grad(lp.sum(), zz)[0]))
    finally:
        torch.set_num_threads(n)
    for a, b in zip(*outs):
        assert torch.equal(a, b)


# -- the op it runs, compile ---------------------------------------------------------------------------

def test_opcheck(device):
    z, c = make_kde(6, 6, 3, device, torch.float32, seed=12)
    h = torch.tensor(0.7, dtype=torch.float64)
    for ex in (False, True):
        torch.library.opcheck(torch.ops.xvae_fast.kde_log_prob, (z.clone().requires_grad_(), c, h, ex))
    lp, lse, direct = torch.ops.xvae_fast.kde_log_prob(z, c, h, True)
    torch.library.opcheck(torch.ops.xvae_fast.kde_log_prob_backward,
                          (torch.randn(6, device=device), z, c, h, lse, direct, True))


def test_compile_fullgraph_matches_eager(device):
    torch._dynamo.reset()
    z, c = make_kde(10, 30, 4, device, torch.float32, seed=13)
    h_t = torch.tensor(0.5, device=device)

    def loss(z, c):  # a float bandwidth, a tensor one, and the leave-one-out form
        return (-xf.kde_log_prob(z, c, 0.7).mean() - xf.kde_log_prob(z, c, h_t).mean()
                + xf.kde_log_prob(c[:10], c[:10], h_t, exclude_self=True).sum())

    ze, zc = z.clone().requires_grad_(), z.clone().requires_grad_()
    out = loss(ze, c)
    out_c = torch.compile(loss, fullgraph=True)(zc, c)
    torch.testing.assert_close(out_c, out)
    torch.testing.assert_close(torch.autograd.grad(out_c, zc)[0], torch.autograd.grad(out, ze)[0])


# -- laws ----------------------------------------------------------------------------------------------

def test_integrates_to_one_in_1d_and_2d():
    g = torch.Generator().manual_seed(14)
    c1 = torch.randn(5, 1, generator=g, dtype=torch.float64)
    x = torch.linspace(-8, 8, 4001, dtype=torch.float64)[:, None]
    q = torch.exp(xf.kde_log_prob(x, c1, 0.3))
    assert abs(torch.trapezoid(q, x[:, 0]).item() - 1) < 1e-9
    c2 = torch.randn(4, 2, generator=g, dtype=torch.float64)
    t = torch.linspace(-7, 7, 561, dtype=torch.float64)
    grid = torch.cartesian_prod(t, t)
    q2 = torch.exp(xf.kde_log_prob(grid, c2, 0.5)).reshape(561, 561)
    mass = torch.trapezoid(torch.trapezoid(q2, t, dim=1), t).item()
    assert abs(mass - 1) < 1e-7


def test_invariant_to_centre_order():
    z, c = make_kde(8, 50, 6, seed=15)
    perm = torch.randperm(50, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(xf.kde_log_prob(z, c[perm], 0.4), xf.kde_log_prob(z, c, 0.4),
                               rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("h", [0.5, 0.01])
def test_exclude_self_drops_exactly_the_i_equals_j_term(device, h):
    # Against the KDE of each row over the other m - 1 centres, for z = the centres (the LOO entropy)
    # and for other points; h = 0.01 makes the self term dominate by e^-hundreds, where subtracting
    # it from the full sum would cancel every digit.
    _, c = make_kde(0, 9, 3, device, seed=16)
    z = c + 0.1 * make_kde(9, 1, 3, device, seed=17)[0]
    for pts in (c, z):
        got = xf.kde_log_prob(pts, c, h, exclude_self=True)
        want = torch.stack([xf.kde_log_prob(pts[i:i + 1], torch.cat([c[:i], c[i + 1:]]), h)[0]
                            for i in range(9)])
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-10)
        torch.testing.assert_close(got.cpu(), direct_formula(pts, c, h, exclude_self=True), rtol=1e-12, atol=1e-10)
        torch.testing.assert_close(R.kde_log_prob(pts, c, h, exclude_self=True), got, rtol=1e-12, atol=1e-10)
    # m = 2: each point sees only the other one
    c2 = torch.tensor([[0.0], [1.0]], dtype=torch.float64, device=device)
    want = -1 / (2 * 0.3 ** 2) - math.log(0.3) - 0.5 * LOG_2PI
    torch.testing.assert_close(xf.kde_log_prob(c2, c2, 0.3, exclude_self=True).cpu(),
                               torch.full((2,), want, dtype=torch.float64))


def test_empty_batch_and_noncontiguous_inputs():
    _, c = make_kde(0, 5, 3, seed=18)
    z0 = torch.zeros(0, 3, dtype=torch.float64, requires_grad=True)
    out = xf.kde_log_prob(z0, c, 0.5)
    assert out.shape == (0,) and torch.autograd.grad(out.sum(), z0)[0].shape == (0, 3)
    zt = torch.randn(3, 11, dtype=torch.float64).t()
    ct = torch.randn(3, 7, dtype=torch.float64).t()
    assert not zt.is_contiguous() and not ct.is_contiguous()
    torch.testing.assert_close(xf.kde_log_prob(zt, ct, 0.5),
                               xf.kde_log_prob(zt.contiguous(), ct.contiguous(), 0.5), rtol=0, atol=0)


def test_both_modules_expose_it_with_one_signature():
    assert "kde_log_prob" in xf.__all__
    assert inspect.signature(xf.kde_log_prob).parameters.keys() == \
        inspect.signature(R.kde_log_prob).parameters.keys()


# -- bad inputs ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fn", [xf.kde_log_prob, R.kde_log_prob])
def test_bad_inputs(fn):
    z, c = make_kde(5, 4, 3, seed=19)
    with pytest.raises(TypeError, match="z must be a torch.Tensor"):
        fn(z.tolist(), c, 0.5)
    with pytest.raises(TypeError, match="z must be float32"):
        fn(z.long(), c, 0.5)
    with pytest.raises(ValueError, match=r"z must have shape \(N, d\)"):
        fn(z[0], c, 0.5)
    with pytest.raises(TypeError, match="centres must be a torch.Tensor"):
        fn(z, None, 0.5)
    with pytest.raises(ValueError, match=r"centres must have shape \(m, d\) with m >= 1 and d = 3"):
        fn(z, c[:, :2], 0.5)
    with pytest.raises(ValueError, match=r"centres must have shape \(m, d\) with m >= 1"):
        fn(z, c[:0], 0.5)
    with pytest.raises(TypeError, match="centres has dtype torch.float32 but z has torch.float64"):
        fn(z, c.float(), 0.5)
    with pytest.raises(ValueError, match="centres is on meta but z is on cpu"):
        fn(z, c.to("meta"), 0.5)
    with pytest.raises(ValueError, match="centres contains NaN or inf"):
        fn(z, c.clone().fill_(float("nan")), 0.5)
    for h in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="bandwidth must be positive and finite"):
            fn(z, c, h)
        with pytest.raises(ValueError, match="bandwidth must be positive and finite"):
            fn(z, c, torch.tensor(h))
    with pytest.raises(TypeError, match="bandwidth must be a positive number or a 0-dim tensor, got str"):
        fn(z, c, "0.5")
    with pytest.raises(TypeError, match="bandwidth must be a positive number or a 0-dim tensor, got bool"):
        fn(z, c, True)
    with pytest.raises(ValueError, match=r"bandwidth must be a positive number or a 0-dim tensor, got a "
                                         r"tensor of shape \(1,\)"):
        fn(z, c, torch.tensor([0.5]))
    with pytest.raises(TypeError, match="bandwidth must be a floating-point tensor"):
        fn(z, c, torch.tensor(1))
    with pytest.raises(ValueError, match="bandwidth requires grad, but kde_log_prob does not differentiate"):
        fn(z, c, torch.tensor(0.5, dtype=torch.float64, requires_grad=True))
    with torch.no_grad():  # no graph, nothing to differentiate: accepted
        fn(z, c, torch.tensor(0.5, dtype=torch.float64, requires_grad=True))
    with pytest.raises(ValueError, match="exclude_self=True .* got N = 5 and m = 4"):
        fn(z, c, 0.5, exclude_self=True)
    with pytest.raises(ValueError, match="exclude_self=True .* at least 2, got N = 1 and m = 1"):
        fn(z[:1], z[:1], 0.5, exclude_self=True)
    with pytest.raises(TypeError, match="exclude_self must be a bool"):
        fn(z, c, 0.5, exclude_self=1)
    bad = z.clone()
    bad[2, 1] = float("nan")
    fn(bad, c, 0.5)  # no scan by default
    with pytest.raises(ValueError, match="z contains NaN or inf"):
        fn(bad, c, 0.5, check_finite=True)
