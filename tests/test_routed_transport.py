import numpy as np
import pytest
import torch
from scipy import stats

import xvae_fast as xf
from xvae_fast import CoordinatePlan, Plan
from xvae_fast import reference as R

from conftest import TOLS, make_inputs, make_prior

PRESETS = list(xf.PRESETS)


def _gen(seed=0, device="cpu"):
    return torch.Generator(device=device).manual_seed(seed)


def _fused_and_replayed(mu, lv, prior, plan, pi_q, seed=0):
    z, comp, state = xf.routed_transport_with_state(mu, lv, prior, plan, pi_q, _gen(seed, mu.device))
    noise = xf.draw_noise(state, mu.shape[0], mu.shape[1], mu.dtype)
    z_ref, c_ref = R.routed_transport(mu, lv, prior, plan, pi_q, noise=noise, return_components=True)
    return z, comp, z_ref, c_ref


@pytest.mark.parametrize("plan", PRESETS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
def test_parity_replayed_draws(device, dtype, plan):
    B, K = 45, 9
    prior = make_prior(K, device)
    l, mu, lv = make_inputs(B, K, device, dtype, requires_grad=True)
    pi_q = xf.responsibilities(l).detach()
    z, comp, z_ref, c_ref = _fused_and_replayed(mu, lv, prior, plan, pi_q)
    assert z.dtype == dtype
    torch.testing.assert_close(z.float() if dtype != torch.float64 else z,
                               z_ref.float() if dtype != torch.float64 else z_ref, **TOLS[dtype])
    # The saved component indices are those the reference routed with.
    p = Plan.preset(plan, K)
    post = [k for k, c in enumerate(p.coordinates) if c.source == "posterior"]
    assert comp.shape == (B, len(post)) and comp.dtype == torch.int16
    if post:
        assert torch.equal(comp.long(), c_ref[:, post])
    gz = torch.randn(B, K, generator=_gen(5), dtype=torch.float64).to(device)
    g = torch.autograd.grad((z.double() * gz).sum(), (mu, lv))
    g_ref = torch.autograd.grad((z_ref.double() * gz).sum(), (mu, lv))
    for a, b in zip(g, g_ref):
        torch.testing.assert_close(a.double(), b.double(), **TOLS[dtype])


@pytest.mark.parametrize("B", [3, 37])
@pytest.mark.parametrize("K", [16, 18, 34])
@pytest.mark.parametrize("plan", ["full", "split-2/3", "split-1/3"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
def test_parity_replayed_draws_even_K(device, dtype, plan, K, B):
    # Even K with B >= K / 4 takes the CPU kernel's blocked path for prior-routed plans (16-column
    # blocks, and a narrower last block when 16 does not divide K); B = 3 the per-row loop.
    prior = make_prior(K, device)
    l, mu, lv = make_inputs(B, K, device, dtype, requires_grad=True)
    z, comp, z_ref, c_ref = _fused_and_replayed(mu, lv, prior, plan, None)
    torch.testing.assert_close(z.float() if dtype != torch.float64 else z,
                               z_ref.float() if dtype != torch.float64 else z_ref, **TOLS[dtype])
    gz = torch.randn(B, K, generator=_gen(5), dtype=torch.float64).to(device)
    g = torch.autograd.grad((z.double() * gz).sum(), (mu, lv))
    g_ref = torch.autograd.grad((z_ref.double() * gz).sum(), (mu, lv))
    for a, b in zip(g, g_ref):
        torch.testing.assert_close(a.double(), b.double(), **TOLS[dtype])


@pytest.mark.parametrize("weights", ["zeros", "tiny", "spiky", "powers", "uniform"])
def test_categorical_draws_match_reference_for_uneven_weights(weights):
    # Every routed component equals the reference's searchsorted draw, also where guide buckets
    # hold several CDF steps or none (zero and tiny weights, weights over many orders of
    # magnitude). M[c, k] = c with tiny stds makes z reveal the component.
    K, B = 16, 4000
    g = torch.Generator().manual_seed(3)
    w = torch.rand(K, generator=g, dtype=torch.float64) + 0.1
    if weights == "zeros":
        w[torch.rand(K, generator=g) < 0.5] = 0
        w[0] += 0.1
    elif weights == "tiny":
        w = w * torch.where(torch.rand(K, generator=g) < 0.7, 1e-9, 1.0)
    elif weights == "spiky":
        w = torch.exp(torch.randn(K, generator=g, dtype=torch.float64) * 6)
    elif weights == "powers":
        w = 2.0 ** -torch.arange(K, dtype=torch.float64)
    else:
        w = torch.ones(K, dtype=torch.float64)
    M = torch.arange(K, dtype=torch.float64)[:, None].expand(K, K).contiguous()
    prior = xf.MixturePrior(w / w.sum(), M, torch.full((K, K), 1e-3, dtype=torch.float64))
    mu = lv = torch.zeros(B, K, dtype=torch.float64)
    z, _, state = xf.routed_transport_with_state(mu, lv, prior, "full", generator=_gen(11))
    z_ref = R.routed_transport(mu, lv, prior, "full", noise=xf.draw_noise(state, B, K, torch.float64))
    torch.testing.assert_close(z, z_ref, rtol=1e-10, atol=1e-9)


@pytest.mark.parametrize("plan", PRESETS)
def test_gradcheck(device, plan):
    K = 6
    prior = make_prior(K, device)
    l, mu, lv = make_inputs(5, K, device, requires_grad=True)
    pi_q = xf.responsibilities(l).detach()
    fn = lambda a, b: xf.routed_transport(a, b, prior, plan, pi_q, generator=_gen(3, device))
    assert torch.autograd.gradcheck(fn, (mu, lv))


def test_gradcheck_custom_plan_all_posterior():
    # Several coordinates reading the same posterior column: the backward must accumulate.
    K = 4
    prior = make_prior(K)
    l, mu, lv = make_inputs(6, K, requires_grad=True)
    plan = Plan([CoordinatePlan("posterior", "row", "posterior", "direct")] * 2 +
                [CoordinatePlan("prior", "none", "posterior", "direct"), xf.ops.plans.PRIOR_TRANSPORT])
    pi_q = xf.responsibilities(l).detach()
    fn = lambda a, b: xf.routed_transport(a, b, prior, plan, pi_q, generator=_gen(1))
    assert torch.autograd.gradcheck(fn, (mu, lv))


def test_opcheck(device):
    K = 5
    prior = make_prior(K, device, dtype=torch.float32)
    l, mu, lv = make_inputs(7, K, device, torch.float32, requires_grad=True)
    w, _, M, S, _, _ = prior.tensors_for(torch.float32, device)
    pi_q = xf.responsibilities(l).detach()
    for name in ("full", "k1-pq-nq"):
        p = Plan.preset(name, K)
        # Schema, fake-tensor and autograd-registration checks; the op draws fresh noise on each
        # call, so output comparison across calls (aot_dispatch) is covered by the compile test.
        torch.library.opcheck(torch.ops.xvae_fast.routed_transport,
                              (mu, lv, M, S, w, pi_q, p.codes_tensor(device), p.num_posterior, None),
                              test_utils=("test_schema", "test_autograd_registration",
                                          "test_faketensor"))
        z, comp, _ = torch.ops.xvae_fast.routed_transport(mu.detach(), lv.detach(), M, S, w, pi_q,
                                                          p.codes_tensor(device), p.num_posterior)
        torch.library.opcheck(torch.ops.xvae_fast.routed_transport_backward,
                              (torch.ones_like(z), z, mu.detach(), comp, p.codes_tensor(device)))
    torch.library.opcheck(torch.ops.xvae_fast.draw_noise,
                          (torch.tensor([5, 8], device=device), 3, 4, False))


def _mixture_cdf(x, w, loc, scale):
    return sum(wc * stats.norm.cdf(x, lc, sc) for wc, lc, sc in zip(w, loc, scale))


def test_full_preset_marginal_is_proposition_1_mixture():
    # One posterior row repeated: z[:, k] are i.i.d. draws from
    # sum_c pi_p[c] N(mu + sigma/s_k (M[c,k] - m_k), (sigma/s_k S[c,k])^2).
    K, B = 4, 20000
    prior = make_prior(K, seed=11)
    mu = torch.tensor([0.3, -1.0, 2.0, 0.0], dtype=torch.float64).expand(B, K).contiguous()
    lv = torch.tensor([0.0, -0.5, 0.4, 1.0], dtype=torch.float64).expand(B, K).contiguous()
    z = xf.routed_transport(mu, lv, prior, "full", generator=_gen(2024))
    w = prior.weights.numpy()
    M, S = prior.means.numpy(), prior.stds.numpy()
    for k in range(K):
        sig, m_k, s_k = np.exp(0.5 * lv[0, k].item()), M[k, k], S[k, k]
        loc = mu[0, k].item() + sig / s_k * (M[:, k] - m_k)
        scale = sig / s_k * S[:, k]
        res = stats.kstest(z[:, k].numpy(), lambda x: _mixture_cdf(x, w, loc, scale))
        assert res.pvalue > 1e-3, (k, res)
    # And a wrong mixture (weights reversed) is rejected: the test has power.
    loc = mu[0, 0].item() + (M[:, 0] - M[0, 0]) / S[0, 0]
    res = stats.kstest(z[:, 0].numpy(), lambda x: _mixture_cdf(x, w[::-1], loc, S[:, 0] / S[0, 0]))
    assert res.pvalue < 1e-6


def _separated_prior(K, weights):
    # Component c sits at 100 c with tiny spread, so z reveals the component it came from.
    M = 100.0 * torch.arange(K, dtype=torch.float64)[:, None].expand(K, K).contiguous()
    return xf.MixturePrior(weights, M, torch.full((K, K), 1e-3, dtype=torch.float64))


@pytest.mark.parametrize("route", ["prior", "posterior"])
def test_routed_component_frequencies(route):
    K, B = 5, 4000
    w = torch.tensor([0.1, 0.3, 0.05, 0.35, 0.2], dtype=torch.float64)
    pi_q = torch.tensor([0.4, 0.1, 0.2, 0.2, 0.1], dtype=torch.float64)
    prior = _separated_prior(K, w)
    plan = Plan([CoordinatePlan(route, "none", "prior", "direct")] * K)
    mu, lv = torch.zeros(B, K, dtype=torch.float64), torch.zeros(B, K, dtype=torch.float64)
    z = xf.routed_transport(mu, lv, prior, plan, pi_q=pi_q, generator=_gen(9))
    c = torch.round(z / 100).long().flatten()
    counts = torch.bincount(c, minlength=K).numpy()
    expected = (w if route == "prior" else pi_q).numpy() * counts.sum()
    assert stats.chisquare(counts, expected).pvalue > 1e-3
    assert stats.chisquare(counts, np.full(K, counts.sum() / K)).pvalue < 1e-6


def test_row_tie_shares_one_component_per_row():
    K, B = 6, 500
    w = torch.full((K,), 1 / K, dtype=torch.float64)
    prior = _separated_prior(K, w)
    tied = CoordinatePlan("prior", "row", "prior", "direct")
    plan = Plan([tied, xf.ops.plans.PRIOR_DIRECT, tied, tied, xf.ops.plans.PRIOR_DIRECT, tied])
    z = xf.routed_transport(torch.zeros(B, K, dtype=torch.float64), torch.zeros(B, K, dtype=torch.float64),
                            prior, plan, generator=_gen(4))
    c = torch.round(z / 100).long()
    tied_cols = c[:, [0, 2, 3, 5]]
    assert (tied_cols == tied_cols[:, :1]).all()
    assert (c[:, 1] != c[:, 0]).any() and len(torch.unique(c[:, 0])) == K


def test_same_seed_same_z_and_thread_count_invariance():
    K = 64
    prior = make_prior(K, dtype=torch.float32)
    l, mu, lv = make_inputs(513, K, dtype=torch.float32)
    pi_q = xf.responsibilities(l)
    n = torch.get_num_threads()
    try:
        outs = []
        for threads in (1, 2, 2):
            torch.set_num_threads(threads)
            torch.manual_seed(123)
            outs.append(xf.routed_transport(mu, lv, prior, "k1-pq-nq", pi_q=pi_q))
            outs.append(xf.routed_transport(mu, lv, prior, "full", generator=_gen(77)))
    finally:
        torch.set_num_threads(n)
    assert torch.equal(outs[0], outs[2]) and torch.equal(outs[0], outs[4])
    assert torch.equal(outs[1], outs[3]) and torch.equal(outs[1], outs[5])
    torch.manual_seed(124)
    assert not torch.equal(outs[0], xf.routed_transport(mu, lv, prior, "k1-pq-nq", pi_q=pi_q))


def test_philox_known_answer_and_normal_law():
    # Random123's known-answer vector for Philox-4x32-10 with counter 0 and key 0:
    # 6627e8d5 e169c58d bc57ac4c 9b00dbd8; words 2 and 3 are the first two elements' uniforms.
    eta, u, u_row = xf.draw_noise(torch.tensor([0, 0]), 1, 2, torch.float64)
    assert u[0, 0].item() == (0xBC57AC4C + 0.5) / 2**32
    assert u[0, 1].item() == (0x9B00DBD8 + 0.5) / 2**32
    r = np.sqrt(-2 * np.log((0x6627E8D5 + 1.0) / 2**32))
    a = (0xE169C58D + 0.5) / 2**32 * 2 * np.pi
    np.testing.assert_allclose(eta[0].numpy(), [r * np.cos(a), r * np.sin(a)], rtol=1e-12)
    eta, u, u_row = xf.draw_noise(torch.tensor([1234, 8]), 300, 101, torch.float32)
    assert stats.kstest(eta.flatten().double().numpy(), "norm").pvalue > 1e-3
    assert stats.kstest(u.flatten().numpy(), "uniform").pvalue > 1e-3
    assert stats.kstest(u_row.numpy(), "uniform").pvalue > 1e-3
    # A different offset gives different draws.
    eta2, _, _ = xf.draw_noise(torch.tensor([1234, 12]), 300, 101, torch.float32)
    assert not torch.equal(eta, eta2)


def test_empty_batch_and_non_contiguous():
    K = 4
    prior = make_prior(K)
    _, mu, lv = make_inputs(0, K, requires_grad=True)
    z = xf.routed_transport(mu, lv, prior, "full")
    assert z.shape == (0, K)
    _, mu, lv = make_inputs(10, 8)
    mu_nc, lv_nc = mu[:, ::2], lv[:, ::2]
    a = xf.routed_transport(mu_nc, lv_nc, prior, "full", generator=_gen(1))
    b = xf.routed_transport(mu_nc.contiguous(), lv_nc.contiguous(), prior, "full", generator=_gen(1))
    assert torch.equal(a, b)


def test_bad_inputs():
    K = 4
    prior = make_prior(K)
    l, mu, lv = make_inputs(3, K)
    with pytest.raises(ValueError, match="routes by the posterior's pi_q, but pi_q was not given"):
        xf.routed_transport(mu, lv, prior, "k1-pq-np")
    with pytest.raises(ValueError, match="routes by the posterior's pi_q"):
        xf.routed_transport(mu, lv, prior, "interleaved")
    with pytest.raises(ValueError, match="unknown plan preset 'fulll'"):
        xf.routed_transport(mu, lv, prior, "fulll")
    with pytest.raises(ValueError, match="needs C == K"):
        xf.routed_transport(mu, lv, make_prior(K, C=2), "full")
    with pytest.raises(ValueError, match="logvar has shape"):
        xf.routed_transport(mu, lv[:2], prior, "full")
    with pytest.raises(TypeError, match="logvar has dtype"):
        xf.routed_transport(mu, lv.float(), prior, "full")
    with pytest.raises(ValueError, match="logvar is on meta but mu is on cpu"):
        xf.routed_transport(mu, lv.to("meta"), prior, "full")
    with pytest.raises(ValueError, match="pi_q is on meta but mu is on cpu"):
        xf.routed_transport(mu, lv, prior, "k1-pq-np", pi_q=torch.ones(K, device="meta") / K)
    with pytest.raises(ValueError, match="mu has 3 latent coordinates, but the prior has K = 4"):
        xf.routed_transport(mu[:, :3], lv[:, :3], prior, "full")
    with pytest.raises(ValueError, match="pi_q must sum to 1"):
        xf.routed_transport(mu, lv, prior, "k1-pq-np", pi_q=torch.full((K,), 0.5, dtype=torch.float64))
    with pytest.raises(ValueError, match="pi_q must be non-negative"):
        xf.routed_transport(mu, lv, prior, "k1-pq-np",
                            pi_q=torch.tensor([1.5, -0.5, 0.0, 0.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="pi_q must have shape"):
        xf.routed_transport(mu, lv, prior, "k1-pq-np", pi_q=torch.ones(3) / 3)
    with pytest.raises(ValueError, match="plan has 3 coordinates but the latent size K is 4"):
        xf.routed_transport(mu, lv, prior, Plan([xf.ops.plans.PRIOR_TRANSPORT] * 3))
    with pytest.raises(ValueError, match="mode 'transport' needs source 'prior'"):
        CoordinatePlan("prior", "none", "posterior", "transport")
    with pytest.raises(ValueError, match="CoordinatePlan.route must be one of"):
        CoordinatePlan("elsewhere")
    # The compiled op refuses inconsistent raw arguments instead of reading out of bounds.
    w, _, M, S, _, _ = prior.tensors_for(torch.float64, "cpu")
    bad = torch.tensor([2, 2, 2, 2], dtype=torch.int32)  # route posterior, no pi_q
    with pytest.raises(RuntimeError, match="routes by pi_q but pi_q was not given"):
        torch.ops.xvae_fast.routed_transport(mu, lv, M, S, w, None, bad, 0)


def _numpy_philox(seed, subsequences, offset_blocks=0):
    """Independent Philox-4x32-10 (Random123) over many counters, in numpy uint64 arithmetic."""
    m = np.uint64(0xFFFFFFFF)
    sub = np.asarray(subsequences, dtype=np.uint64)
    c = [np.full_like(sub, offset_blocks & 0xFFFFFFFF), np.full_like(sub, offset_blocks >> 32),
         sub & m, sub >> np.uint64(32)]
    k0, k1 = np.uint64(seed & 0xFFFFFFFF), np.uint64(seed >> 32)
    for _ in range(10):
        p0 = np.uint64(0xD2511F53) * c[0]
        p1 = np.uint64(0xCD9E8D57) * c[2]
        c = [(p1 >> np.uint64(32)) ^ c[1] ^ k0, p1 & m, (p0 >> np.uint64(32)) ^ c[3] ^ k1, p0 & m]
        k0, k1 = (k0 + np.uint64(0x9E3779B9)) & m, (k1 + np.uint64(0xBB67AE85)) & m
    return c


def test_draws_match_independent_philox():
    # Covers the vectorised (8-pair) and scalar paths, and a 64-bit seed and offset.
    seed, offset = 0x1234_5678_9ABC_DEF1, 40
    rows, cols = 7, 37
    eta, u, u_row = xf.draw_noise(torch.tensor([seed, offset]), rows, cols, torch.float64)
    n = rows * cols
    w = _numpy_philox(seed, np.arange((n + 1) // 2), offset // 4)
    words = np.stack([w[2], w[3]], 1).reshape(-1)[:n]
    np.testing.assert_array_equal(u.numpy().reshape(-1), (words.astype(np.float64) + 0.5) / 2**32)
    r = np.sqrt(-2 * np.log((w[0].astype(np.float64) + 1.0) / 2**32))
    a = (w[1].astype(np.float64) + 0.5) / 2**32 * 2 * np.pi
    normals = np.stack([r * np.cos(a), r * np.sin(a)], 1).reshape(-1)[:n]
    np.testing.assert_allclose(eta.numpy().reshape(-1), normals, rtol=1e-12, atol=1e-12)
    row_words = _numpy_philox(seed, (1 << 63) + np.arange(rows, dtype=np.uint64), offset // 4)[0]
    np.testing.assert_array_equal(u_row.numpy(), (row_words.astype(np.float64) + 0.5) / 2**32)


def test_backends_agree_for_the_same_seed_and_offset():
    # CPU and every other built backend draw the same numbers from the same (seed, offset), and a
    # routed_transport run on either replays exactly through the CPU reference.
    from conftest import DEVICES
    state = torch.tensor([987654321, 8])
    ref = xf.draw_noise(state, 33, 17, torch.float64)
    for dev in DEVICES:
        other = xf.draw_noise(state.to(dev), 33, 17, torch.float64)
        for a, b in zip(other, ref):
            torch.testing.assert_close(a.cpu(), b, rtol=1e-12, atol=1e-12)
        prior = make_prior(17, dev)
        l, mu, lv = make_inputs(33, 17, dev)
        z, comp, st = xf.routed_transport_with_state(mu, lv, prior, "k1-pq-nq", xf.responsibilities(l))
        noise = xf.draw_noise(st.cpu(), 33, 17, torch.float64)
        z_ref = R.routed_transport(mu.cpu(), lv.cpu(), prior.cpu(), "k1-pq-nq",
                                   xf.responsibilities(l.cpu()), noise=noise)
        torch.testing.assert_close(z.cpu(), z_ref, rtol=1e-10, atol=1e-12)
