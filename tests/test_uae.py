"""The Unscented Autoencoder (SPEC-related 3): the sigma-point laws, the loss forms, the gradient
penalty, the ex-post sampler, interpolation and the paper architecture."""
import math

import pytest
import torch
from torch import nn

from xvae_fast.models.uae import (UAE_FORMS, UAE_VARIANTS, UnscentedAE, kl_standard_normal,
                                  wasserstein_code, wasserstein_paper)
from xvae_fast.models.sigma_points import (SIGMA_HEURISTICS, select_sigma_indices, sigma_points,
                                    ut_weights)


def moments(B=3, n=5, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    mu = torch.randn(B, n, generator=g, dtype=dtype)
    logvar = torch.randn(B, n, generator=g, dtype=dtype) * 0.7
    return mu, logvar


def weighted_moments(points, w):
    """Weighted mean (B, n) and covariance (B, n, n) of points (B, P, n)."""
    mean = torch.einsum("p,bpn->bn", w, points)
    d = points - mean.unsqueeze(1)
    return mean, torch.einsum("p,bpi,bpj->bij", w, d, d)


def vector_model(n=3, D=6, **kw):
    torch.manual_seed(0)
    return UnscentedAE("vector", (D,), n, hidden=(16,), **kw)


# -- sigma points -----------------------------------------------------------------------------------
@pytest.mark.parametrize("kappa", [-2.5, 1e-3, 0.5, 3.0])
def test_standard_weights_reproduce_mean_and_covariance_exactly(kappa):
    mu, logvar = moments(n=5)
    w = ut_weights(5, kappa, "standard")
    assert float(w.sum()) == pytest.approx(1.0, abs=1e-14)
    mean, cov = weighted_moments(sigma_points(mu, logvar, kappa), w)
    torch.testing.assert_close(mean, mu, rtol=0, atol=1e-12)
    torch.testing.assert_close(cov, torch.diag_embed(logvar.exp()), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("n,kappa", [(64, 1e-3), (5, 0.5), (7, 2.0)])
def test_uniform_weights_mean_exact_covariance_scaled(n, kappa):
    mu, logvar = moments(B=2, n=n)
    w = ut_weights(n, kappa, "uniform")
    mean, cov = weighted_moments(sigma_points(mu, logvar, kappa), w)
    torch.testing.assert_close(mean, mu, rtol=0, atol=1e-12)
    factor = 2 * (n + kappa) / (2 * n + 1)
    torch.testing.assert_close(cov, torch.diag_embed(logvar.exp()) * factor, rtol=1e-12, atol=1e-12)
    if n == 64:
        assert factor == pytest.approx(0.99226, abs=1e-5)   # SPEC: 0.9922 sigma^2 at kappa = 1e-3
    if kappa == 0.5:
        assert factor == 1.0                                 # the paper's "unbiased" case


def test_points_layout_and_spread():
    mu, logvar = moments(B=2, n=4)
    chi = sigma_points(mu, logvar, 1e-3)
    assert chi.shape == (2, 9, 4)
    s = math.sqrt(4 + 1e-3) * torch.exp(0.5 * logvar)
    torch.testing.assert_close(chi[:, 0], mu)
    torch.testing.assert_close(chi[:, 1:5], mu[:, None] + torch.diag_embed(s))
    torch.testing.assert_close(chi[:, 5:], mu[:, None] - torch.diag_embed(s))


def test_ut_exact_for_affine_decoder():
    mu, logvar = moments(B=4, n=6)
    g = torch.Generator().manual_seed(3)
    A = torch.randn(10, 6, generator=g, dtype=torch.float64)
    b = torch.randn(10, generator=g, dtype=torch.float64)
    decoded = sigma_points(mu, logvar, 0.3) @ A.T + b            # (B, 2n + 1, 10)
    torch.testing.assert_close(decoded.mean(1), mu @ A.T + b, rtol=1e-12, atol=1e-12)


def test_gathered_points_equal_full_points_and_gradients():
    mu, logvar = moments(B=3, n=5)
    mu.requires_grad_(True)
    logvar.requires_grad_(True)
    index = torch.tensor([[0, 1, 10, 10], [5, 6, 3, 0], [9, 2, 2, 7]])
    got = sigma_points(mu, logvar, 0.2, index)
    full = sigma_points(mu, logvar, 0.2)
    want = full.gather(1, index[..., None].expand(-1, -1, 5))
    torch.testing.assert_close(got, want, rtol=0, atol=1e-14)
    w = torch.randn(got.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    g1 = torch.autograd.grad((got * w).sum(), (mu, logvar))
    g2 = torch.autograd.grad((want * w).sum(), (mu, logvar))
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_random_selection_frequencies_are_uniform():
    n, B, K = 8, 1000, 17
    idx = select_sigma_indices("random", K, torch.ones(B, n), torch.Generator().manual_seed(0))
    assert idx.shape == (B, K) and idx.dtype == torch.long
    counts = torch.bincount(idx.flatten(), minlength=2 * n + 1).double()
    assert counts.numel() == 2 * n + 1                       # all in [0, 2n], the mean included
    expected = B * K / (2 * n + 1)
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 39.25                                       # chi^2_16 at p = 0.001
    assert counts[0] > 0


def test_random_without_replacement_is_distinct():
    n = 4
    idx = select_sigma_indices("random", 9, torch.ones(50, n), torch.Generator().manual_seed(1),
                               replacement=False)
    assert all(len(set(row.tolist())) == 9 for row in idx)
    assert int(idx.min()) >= 0 and int(idx.max()) <= 2 * n


@pytest.mark.parametrize("heuristic", ["random-pairs", "top-pairs"])
def test_pair_heuristics_contain_both_signs_of_distinct_axes(heuristic):
    n, K = 6, 6
    sigma = torch.rand(40, n, generator=torch.Generator().manual_seed(2)) + 0.1
    idx = select_sigma_indices(heuristic, K, sigma, torch.Generator().manual_seed(3))
    assert idx.shape == (40, K)
    for row in idx.tolist():
        assert 0 not in row
        plus = sorted(i for i in row if i <= n)
        minus = sorted(i - n for i in row if i > n)
        assert plus == minus and len(set(plus)) == K // 2    # i and n + i together, distinct axes
    if heuristic == "top-pairs":
        top = sigma.topk(K // 2, dim=1).indices + 1
        for row, t in zip(idx.tolist(), top.tolist()):
            assert sorted(i for i in row if i <= n) == sorted(t)


def test_random_pairs_cover_all_axes_and_follow_the_generator():
    n, K = 5, 2
    sigma = torch.ones(2000, n)
    a = select_sigma_indices("random-pairs", K, sigma, torch.Generator().manual_seed(4))
    b = select_sigma_indices("random-pairs", K, sigma, torch.Generator().manual_seed(4))
    assert torch.equal(a, b)
    counts = torch.bincount(a[:, 0] - 1, minlength=n).double()
    assert float((counts / 2000 - 1 / n).abs().max()) < 0.04   # ~4.5 binomial std


def test_top_pairs_picks_argmax_axis():
    sigma = torch.tensor([[0.1, 3.0, 0.2], [5.0, 0.3, 0.4]])
    idx = select_sigma_indices("top-pairs", 2, sigma)
    assert idx.tolist() == [[2, 5], [1, 4]]


def test_selection_uses_the_global_rng_without_a_generator():
    sigma = torch.ones(10, 4)
    torch.manual_seed(7)
    a = select_sigma_indices("random", 3, sigma)
    torch.manual_seed(7)
    b = select_sigma_indices("random", 3, sigma)
    assert torch.equal(a, b)


def test_sigma_point_argument_errors():
    mu, logvar = moments(B=2, n=3)
    with pytest.raises(ValueError, match="logvar"):
        sigma_points(mu, logvar[:, :2])
    with pytest.raises(ValueError, match="mu"):
        sigma_points(mu[0], logvar[0])
    with pytest.raises(ValueError, match="kappa"):
        sigma_points(mu, logvar, kappa=-3.0)
    with pytest.raises(ValueError, match="index"):
        sigma_points(mu, logvar, index=torch.tensor([[0, 7]]).expand(2, 2))
    with pytest.raises(ValueError, match="index"):
        sigma_points(mu, logvar, index=torch.zeros(2, 2, dtype=torch.int32))
    with pytest.raises(ValueError, match="index"):
        sigma_points(mu, logvar, index=torch.zeros(3, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="kind"):
        ut_weights(3, 1e-3, "bogus")
    with pytest.raises(ValueError, match="kappa"):
        ut_weights(3, -3)
    s = torch.ones(2, 3)
    with pytest.raises(ValueError, match="heuristic"):
        select_sigma_indices("best", 2, s)
    with pytest.raises(ValueError, match="K"):
        select_sigma_indices("random", 0, s)
    with pytest.raises(ValueError, match="K larger than 2n\\+1 without replacement"):
        select_sigma_indices("random", 8, s, replacement=False)
    with pytest.raises(ValueError, match="K must be even"):
        select_sigma_indices("random-pairs", 3, s)
    with pytest.raises(ValueError, match="K = 8.*n = 3"):
        select_sigma_indices("top-pairs", 8, s)
    with pytest.raises(ValueError, match="sigma"):
        select_sigma_indices("random", 2, torch.ones(3))
    assert SIGMA_HEURISTICS == ("random", "random-pairs", "top-pairs")


# -- regularisers -----------------------------------------------------------------------------------
def test_wasserstein_terms_zero_at_the_prior():
    mu = torch.zeros(2, 4, dtype=torch.float64)
    logvar = torch.zeros(2, 4, dtype=torch.float64)
    assert float(wasserstein_paper(mu, logvar).abs().max()) == 0.0
    # the code's 1e-6 offset leaves a floor of sqrt(n^2) 1e-6 = 4e-6 at the prior
    torch.testing.assert_close(wasserstein_code(mu, logvar), torch.full((2,), 4e-6, dtype=torch.float64))
    assert float(kl_standard_normal(mu, logvar).abs().max()) == 0.0


def test_wasserstein_gradient_finite_as_sigma_vanishes_unlike_kl():
    sigma = torch.full((1, 3), 1e-6, dtype=torch.float64, requires_grad=True)
    mu = torch.zeros(1, 3, dtype=torch.float64)
    logvar = 2 * torch.log(sigma)
    (gw,) = torch.autograd.grad(wasserstein_paper(mu, logvar).sum(), sigma, retain_graph=True)
    (gc,) = torch.autograd.grad(wasserstein_code(mu, logvar).sum(), sigma, retain_graph=True)
    (gk,) = torch.autograd.grad(kl_standard_normal(mu, logvar).sum(), sigma)
    torch.testing.assert_close(gw, torch.full_like(gw, 2 * (1e-6 - 1)))    # d/ds (s - 1)^2
    assert bool(torch.isfinite(gc).all()) and float(gc.abs().max()) <= 1.0
    assert float(gk.abs().min()) > 1e5                                      # s - 1/s: the log barrier


# -- loss forms ---------------------------------------------------------------------------------------
def test_code_and_paper_terms_against_hand_computation():
    n, D, B, K = 3, 6, 4, 5
    x = torch.rand(B, D, generator=torch.Generator().manual_seed(0))
    for form in UAE_FORMS:
        m = vector_model(n, D, variant="uae", form=form, points=K, kappa=0.25)
        out = m.loss(x, torch.Generator().manual_seed(11))
        # replay: the same encoder, the same index draw, decoded by hand
        _, mu, logvar = m.encode(x)
        sigma = torch.exp(0.5 * logvar)
        idx = select_sigma_indices("random", K, sigma, torch.Generator().manual_seed(11))
        z = sigma_points(mu, logvar, 0.25, idx)
        xbar = m.decoder(z.reshape(B * K, n)).reshape(B, K, D).mean(1)     # identity mean on vectors
        err = (x - xbar) ** 2
        g = torch.autograd.grad(m.decoder(mu).sum(), mu, retain_graph=True)[0]
        if form == "code":
            recon = err.mean()
            M = torch.diag_embed(sigma) + 1e-6 * torch.ones(B, n, n) - torch.eye(n)
            reg = 2.5e-4 * (torch.linalg.matrix_norm(M) + mu.norm(dim=1)).mean()
            gp = 1e-6 * (sigma.pow(2).amax(1).clamp(max=100) * g.norm(dim=1)).mean()
        else:
            recon = err.sum(1).mean()
            reg = 2.5e-4 * (mu.pow(2).sum(1) + (sigma - 1).pow(2).sum(1)).mean()
            gp = 1e-6 * (sigma.pow(2).amax(1) * g.pow(2).sum(1)).mean()
        for key, want in (("recon", recon), ("reg", reg), ("gp", gp)):
            torch.testing.assert_close(out[key], want, rtol=1e-5, atol=1e-12, msg=f"{form} {key}")
        torch.testing.assert_close(out["loss"], recon + reg + gp, rtol=1e-5, atol=1e-12)


def test_paper_recon_is_pixels_times_code_recon_per_variant():
    n, D, B = 3, 6, 4
    x = torch.rand(B, D, generator=torch.Generator().manual_seed(1))
    for variant in UAE_VARIANTS:
        code = vector_model(n, D, variant=variant, form="code", points=4)
        paper = vector_model(n, D, variant=variant, form="paper", points=4)
        paper.load_state_dict(code.state_dict())
        rc = code.loss(x, torch.Generator().manual_seed(5))["recon"]
        rp = paper.loss(x, torch.Generator().manual_seed(5))["recon"]
        torch.testing.assert_close(rp, rc * D, rtol=1e-5, atol=0, msg=variant)


def test_per_sample_and_mean_image_reconstructions_and_kl():
    n, D, B, K = 3, 6, 4, 3
    x = torch.rand(B, D, generator=torch.Generator().manual_seed(2))
    m = vector_model(n, D, variant="vae", form="paper", points=K, beta=0.5)
    out = m.loss(x, torch.Generator().manual_seed(9))
    _, mu, logvar = m.encode(x)
    eps = torch.randn((B, K, n), generator=torch.Generator().manual_seed(9))
    z = mu[:, None] + torch.exp(0.5 * logvar)[:, None] * eps
    dec = m.decoder(z.reshape(B * K, n)).reshape(B, K, D)
    per_sample = ((x[:, None] - dec) ** 2).sum(2).mean()                 # mean_k of the per-sample errors
    torch.testing.assert_close(out["recon"], per_sample, rtol=1e-5, atol=0)
    kl = 0.5 * (mu ** 2 + logvar.exp() - 1 - logvar).sum(1).mean()
    torch.testing.assert_close(out["reg"], 0.5 * kl, rtol=1e-5, atol=0)
    assert float(out["gp"]) == 0.0
    # rae-gp: z = mu, beta ||mu||^2 with the default beta 1e-4
    r = vector_model(n, D, variant="rae-gp", form="paper")
    out = r.loss(x)
    _, mu, _ = r.encode(x)
    torch.testing.assert_close(out["recon"], ((x - r.decoder(mu)) ** 2).sum(1).mean(), rtol=1e-5, atol=0)
    torch.testing.assert_close(out["reg"], 1e-4 * mu.pow(2).sum(1).mean(), rtol=1e-5, atol=0)


# -- gradient penalty -------------------------------------------------------------------------------
def test_gp_for_linear_decoder_is_norm_of_A_transpose_ones():
    n, D = 4, 7
    m = vector_model(n, D, variant="rae-gp", form="code", gamma=1.0)
    lin = nn.Linear(n, D).double()
    m.decoder = lin
    mu = torch.randn(5, n, dtype=torch.float64, requires_grad=True)
    logvar = torch.zeros(5, n, dtype=torch.float64)
    g = m.decoder_gradient(mu)
    want = lin.weight.detach().T @ torch.ones(D, dtype=torch.float64)
    torch.testing.assert_close(g, want.expand(5, n), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(m.gradient_penalty(mu, logvar), want.norm(), rtol=1e-12, atol=1e-12)
    with torch.no_grad():                                  # computed, detached, under no_grad too
        torch.testing.assert_close(m.gradient_penalty(mu, logvar), want.norm(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("form", UAE_FORMS)
def test_gp_double_backward_matches_finite_differences(form):
    n, D = 3, 4
    m = vector_model(n, D, variant="uae", form=form, gamma=1.0)
    torch.manual_seed(1)
    m.decoder = nn.Sequential(nn.Linear(n, 5), nn.Tanh(), nn.Linear(5, D)).double()
    mu = torch.randn(2, n, dtype=torch.float64, requires_grad=True)
    logvar = (torch.randn(2, n, dtype=torch.float64) * 0.5).requires_grad_(True)
    W = m.decoder[0].weight
    gp = m.gradient_penalty(mu, logvar)
    gW, gmu, glv = torch.autograd.grad(gp, (W, mu, logvar))
    h = 1e-6

    def fd(t, i):
        with torch.no_grad():
            old = t.view(-1)[i].item()
            t.view(-1)[i] = old + h
            up = float(m.gradient_penalty(mu, logvar))
            t.view(-1)[i] = old - h
            down = float(m.gradient_penalty(mu, logvar))
            t.view(-1)[i] = old
        return (up - down) / (2 * h)

    for t, g in ((W, gW), (mu, gmu), (logvar, glv)):
        for i in range(t.numel()):
            assert g.view(-1)[i].item() == pytest.approx(fd(t, i), rel=1e-5, abs=1e-8)


# -- every variant trains -----------------------------------------------------------------------------
@pytest.mark.parametrize("variant", UAE_VARIANTS)
@pytest.mark.parametrize("form", UAE_FORMS)
def test_every_variant_is_finite_and_backpropagates(variant, form):
    torch.manual_seed(0)
    for kind, shape, heuristic in (("vector", (6,), "random"), ("image", (1, 8, 8), "top-pairs")):
        m = UnscentedAE(kind, shape, 4, hidden=(16,), variant=variant, form=form, points=4,
                        heuristic=heuristic)
        x = torch.rand(3, *shape)
        out = m.loss(x, torch.Generator().manual_seed(0))
        assert set(out) == set(UnscentedAE.TERMS)
        assert all(bool(torch.isfinite(v)) for v in out.values())
        out["loss"].backward()
        grads = [p.grad for p in m.decoder.parameters()] + [m.mu_head.weight.grad]
        assert all(g is not None and bool(torch.isfinite(g).all()) for g in grads)
        assert float(sum(g.abs().sum() for g in grads)) > 0
        if variant != "rae-gp":
            assert m.logvar_head.weight.grad is not None
        if variant in ("uae", "rae-gp"):
            assert float(out["gp"].detach()) > 0
        fwd = m(x)
        assert fwd["xhat"].shape == x.shape and fwd["logits"] is None
        torch.testing.assert_close(fwd["xhat"], m.decode(fwd["mu"]))


def test_loss_is_reproducible_with_generator_and_global_rng():
    m = vector_model(variant="vae", points=4)
    x = torch.rand(4, 6)
    with torch.no_grad():
        a = m.loss(x, torch.Generator().manual_seed(3))["loss"]
        b = m.loss(x, torch.Generator().manual_seed(3))["loss"]
        c = m.loss(x, torch.Generator().manual_seed(4))["loss"]
        assert float(a) == float(b) and float(a) != float(c)
        torch.manual_seed(5)
        d = m.loss(x)["loss"]
        torch.manual_seed(5)
        assert float(m.loss(x)["loss"]) == float(d)


# -- ex-post sampler --------------------------------------------------------------------------------
def test_expost_requires_a_fit():
    m = vector_model()
    with pytest.raises(RuntimeError, match="fit_expost"):
        m.generate(3)


def test_expost_fit_generate_shapes_determinism_and_state_dict():
    m = vector_model(n=3, D=6, expost_components=4)
    means = torch.randn(200, 3, generator=torch.Generator().manual_seed(0))
    report = m.fit_expost(means, seed=0)
    assert report["components"] == 4 and report["converged"] and math.isfinite(report["log_likelihood"])
    assert int(m.expost_fitted) == 1
    x1 = m.generate(7, generator=torch.Generator().manual_seed(1))
    x2 = m.generate(7, generator=torch.Generator().manual_seed(1))
    x3 = m.generate(7, generator=torch.Generator().manual_seed(2))
    assert x1.shape == (7, 6) and torch.equal(x1, x2) and not torch.equal(x1, x3)
    fresh = vector_model(n=3, D=6, expost_components=4)
    fresh.load_state_dict(m.state_dict())
    torch.testing.assert_close(fresh.generate(7, generator=torch.Generator().manual_seed(1)), x1)
    # alpha = 0 decodes the component means
    z0 = m.sample_latent(50, alpha=0.0, generator=torch.Generator().manual_seed(3))
    assert all(any(torch.allclose(z, c) for c in m.expost_means) for z in z0)


def test_expost_with_fewer_points_than_components():
    m = vector_model(n=2, D=6, expost_components=10)
    report = m.fit_expost(torch.randn(4, 2, generator=torch.Generator().manual_seed(0)))
    assert report["components"] == 4 and "note" in report
    assert float(m.expost_weights[4:].abs().sum()) == 0.0
    assert float(m.expost_weights.sum()) == pytest.approx(1.0, abs=1e-6)
    assert m.sample_latent(5, generator=torch.Generator().manual_seed(0)).shape == (5, 2)


def test_expost_samples_match_a_known_two_component_gaussian():
    g = torch.Generator().manual_seed(0)
    N = 3000
    m1, m2 = torch.tensor([-3.0, 1.0]), torch.tensor([3.0, -1.0])
    L1 = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    L2 = torch.tensor([[0.5, 0.0], [-0.2, 1.0]])
    comp = torch.rand(N, generator=g) < 0.3
    eps = torch.randn(N, 2, generator=g)
    pts = torch.where(comp[:, None], m1 + eps @ L1.T, m2 + eps @ L2.T)
    model = vector_model(n=2, D=6, expost_components=2)
    model.fit_expost(pts, seed=0)
    z = model.sample_latent(20000, generator=torch.Generator().manual_seed(1)).double()
    w = torch.tensor([0.3, 0.7], dtype=torch.float64)
    mean = w[0] * m1.double() + w[1] * m2.double()
    c1, c2 = (L1 @ L1.T).double(), (L2 @ L2.T).double()
    cov = (w[0] * (c1 + torch.outer(m1, m1).double()) + w[1] * (c2 + torch.outer(m2, m2).double())
           - torch.outer(mean, mean))
    torch.testing.assert_close(z.mean(0), mean, rtol=0, atol=0.1)
    torch.testing.assert_close(torch.cov(z.T), cov, rtol=0.05, atol=0.1)
    assert sorted(model.expost_weights.tolist()) == pytest.approx([0.3, 0.7], abs=0.03)
    # alpha scales the spread around the component means
    z_half = model.sample_latent(20000, alpha=0.5, generator=torch.Generator().manual_seed(1))
    comp_of = torch.cdist(z_half, model.expost_means).argmin(1)
    resid = z_half - model.expost_means[comp_of]
    assert float(resid.pow(2).mean()) < 0.5 * float((z - model.expost_means[
        torch.cdist(z.float(), model.expost_means).argmin(1)].double()).pow(2).mean())


# -- interpolation ----------------------------------------------------------------------------------
def test_interpolate_endpoints_and_midpoint():
    m = vector_model(n=3, D=6)
    g = torch.Generator().manual_seed(0)
    x1, x2 = torch.rand(4, 6, generator=g), torch.rand(4, 6, generator=g)
    mu1, mu2 = m.encode(x1)[1], m.encode(x2)[1]
    torch.testing.assert_close(m.interpolate(x1, x2, 0.0), m.decode(mu1).detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(m.interpolate(x1, x2, 1.0), m.decode(mu2).detach(), rtol=1e-5, atol=1e-6)
    assert m.interpolate(x1, x2).shape == (4, 6)
    # slerp of orthogonal unit vectors at t = 1/2 stays on the unit circle; parallel ones lerp
    a = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    b = torch.tensor([[0.0, 1.0], [2.0, 2.0]])
    mid = UnscentedAE.slerp(a, b, 0.5)
    torch.testing.assert_close(mid[0], torch.tensor([0.5 ** 0.5, 0.5 ** 0.5]))
    torch.testing.assert_close(mid[1], torch.tensor([1.5, 1.5]))
    with pytest.raises(ValueError, match="batch size"):
        m.interpolate(x1, x2[:2])


# -- the paper architecture -------------------------------------------------------------------------
@pytest.mark.parametrize("size", [32, 64])
def test_paper_arch_forward_backward(size):
    torch.manual_seed(0)
    m = UnscentedAE("image", (3, size, size), 8, arch="paper", variant="utvae-w", points=1)
    assert m.body.features == 1024
    x = torch.rand(2, 3, size, size)
    out = m.loss(x)
    out["loss"].backward()
    assert bool(torch.isfinite(out["loss"]))
    assert m.decoder.fc.weight.grad is not None and m.body.net[0].weight.grad is not None
    with torch.no_grad():
        xhat = m(x)["xhat"]
    assert xhat.shape == x.shape and float(xhat.min()) >= 0 and float(xhat.max()) <= 1
    assert m.param_counts()["total"] > 0


# -- argument errors --------------------------------------------------------------------------------
@pytest.mark.parametrize("kw,name", [
    (dict(variant="iwae"), "variant"), (dict(form="both"), "form"), (dict(arch="resnet"), "arch"),
    (dict(heuristic="best"), "heuristic"), (dict(points=0), "points"),
    (dict(variant="uae", heuristic="random-pairs", points=3), "points"),
    (dict(variant="uae", heuristic="top-pairs", points=10), "points"),
    (dict(kappa=-4.0), "kappa"), (dict(beta=-1.0), "beta"), (dict(gamma=float("nan")), "gamma"),
    (dict(expost_components=0), "expost_components"), (dict(arch="paper"), "arch 'paper'"),
])
def test_bad_constructor_arguments(kw, name):
    with pytest.raises(ValueError, match=name):
        UnscentedAE("vector", (6,), 3, hidden=(8,), **kw)


def test_bad_inputs():
    with pytest.raises(ValueError, match="arch 'paper'"):
        UnscentedAE("image", (3, 28, 28), 8, arch="paper")
    m = vector_model(n=3, D=6)
    with pytest.raises(ValueError, match="x must have shape"):
        m.loss(torch.rand(4, 5))
    with pytest.raises(ValueError, match="means"):
        m.fit_expost(torch.rand(10, 4))
    with pytest.raises(ValueError, match="routing"):
        m.generate(2, routing="sideways")
