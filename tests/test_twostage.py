"""Two-Stage VAE (Dai & Wipf, ICLR 2019; SPEC-related 4): the interface, the objectives and the laws of
SPEC 4.5 (closed-form decoder variance, Theorems 4 and 5 on a noiseless 2-D manifold in R^20, stage 2
lowering MMD(., N(0, I)) of the codes), the MMD estimator and the paper's InfoGAN architecture."""
import math

import pytest
import torch

from xvae_fast.models.likelihood import LearnedGaussian
from xvae_fast.models.twostage import TwoStageVAE, mmd_to_standard_normal


@pytest.fixture(autouse=True)
def one_thread():
    """The nets here are tiny: one thread avoids oversubscribing shared cores (and is faster)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _model(seed=0, **kw):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        kw.setdefault("hidden", (32, 32))
        kw.setdefault("stage2_width", 32)
        kw.setdefault("stage2_depth", 2)
        return TwoStageVAE("vector", (6,), 4, **kw)


def _gen(seed):
    return torch.Generator().manual_seed(seed)


# -- the noiseless 2-D manifold in R^20 (trained once) --------------------------------------------------
MANIFOLD_STEPS = 3000


def manifold_data(n=1024, seed=0):
    """x = A phi(t), t ~ U[0, 1]^2, phi smooth and injective into R^6, A a random 20 x 6 map (r = 2)."""
    g = _gen(seed)
    t = torch.rand(n, 2, generator=g)
    t1, t2 = t[:, 0], t[:, 1]
    phi = torch.stack([t1, t2, torch.sin(2 * t1 + t2), t1 * t2, t2 ** 2, torch.cos(2 * t1)], 1)
    A = torch.randn(20, 6, generator=g) / math.sqrt(6)
    x = phi @ A.T
    return (x - x.mean(0)) / x.std(0).mean()


@pytest.fixture(scope="module")
def manifold_run():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        x = manifold_data()
        g = _gen(1)
        with torch.random.fork_rng():
            torch.manual_seed(0)
            m = TwoStageVAE("vector", (20,), 8, hidden=(64, 64))
        lr = 3e-3
        opt = torch.optim.Adam(m.stage_parameters("stage1"), lr=lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, MANIFOLD_STEPS, eta_min=0.1 * lr)

        def eval_mse():
            with torch.no_grad():
                return float((m.decode(m.encode(x)[1]) - x).pow(2).mean())

        mse0 = eval_mse()
        log_g, batch_mse = [], []
        for _ in range(MANIFOLD_STEPS):
            xb = x[torch.randint(0, x.shape[0], (128,), generator=g)]
            lg = float(m.likelihood.log_gamma_std.detach())
            out = m.loss_stage1(xb, generator=g)
            opt.zero_grad()
            out["loss"].backward()
            opt.step()
            sched.step()
            log_g.append(lg)
            # the per-entry squared error of this step's (sampled-z) reconstruction, from the recon term
            batch_mse.append((float(out["recon"].detach()) - 20 * (lg + 0.5 * math.log(2 * math.pi)))
                             * 2 * math.exp(2 * lg) / 20)
        m.eval()
        return {"model": m, "x": x, "log_g": torch.tensor(log_g), "batch_mse": torch.tensor(batch_mse),
                "mse0": mse0, "mse1": eval_mse()}
    finally:
        torch.set_num_threads(threads)


def test_theorem4_gamma_goes_to_zero_on_a_noiseless_manifold(manifold_run):
    lg = manifold_run["log_g"]
    start, end = float(lg[:50].mean()), float(lg[-200:].mean())
    assert start - end > 3.0, (start, end)
    # smoothed (10 blocks of 300 steps) log g decreases monotonically
    blocks = lg.view(10, -1).mean(1)
    assert bool((blocks[1:] < blocks[:-1]).all()), blocks.tolist()
    # the reconstruction error falls with it, and no floor is set or reported
    assert manifold_run["mse1"] < manifold_run["mse0"] / 100, (manifold_run["mse0"], manifold_run["mse1"])
    lik = manifold_run["model"].likelihood
    assert lik.gamma_min == 0.0 and lik.stats()["gamma_floor_binds"] == 0.0
    # exp(2 log g) follows the running per-entry training MSE (its closed-form optimum) from above:
    # Adam moves log g by at most ~lr a step, so with the decaying lr it lags the falling MSE (observed
    # gamma / MSE ~ 2.6 at the end of this short run, not the "few %" of a long run)
    running = float(manifold_run["batch_mse"][-200:].mean())
    assert 0.0 < math.log(lik.gamma / running) < 1.0, (lik.gamma, running)


def test_theorem5_encoder_variances_are_bimodal(manifold_run):
    m, x = manifold_run["model"], manifold_run["x"]
    with torch.no_grad():
        _, mu, logvar = m.encode(x)
    var = logvar.exp().mean(0)                      # per-dimension mean encoder variance over the data
    active = var < 0.05
    assert int(active.sum()) == 2, var.tolist()     # r = 2 informative dimensions
    assert bool((var[~active] > 0.8).all()), var.tolist()   # the superfluous ones ~ the prior
    # the decoder ignores the superfluous dimensions: |d f1 / d z_j| ~ 0 there
    J = torch.autograd.functional.jacobian(lambda z: m.decode(z).sum(0), mu[:256])   # (20, 256, 8)
    norms = J.pow(2).sum(0).mean(0).sqrt()
    assert float(norms[~active].max()) < 0.02 * float(norms[active].min()), norms.tolist()


# -- closed-form optimal decoder variance --------------------------------------------------------------
def test_optimal_variance_for_a_fixed_decoder_is_closed_form():
    m = _model(seed=3)
    g = _gen(4)
    x = torch.randn(64, 6, generator=g) * 0.3
    with torch.no_grad():
        h = m.stage1.decoder(m.encode(x)[1] + 0.1 * torch.randn(64, 4, generator=g))  # fixed f1(z)
    lik = m.likelihood
    opt = torch.optim.LBFGS([lik.log_gamma_std], lr=1, max_iter=100, tolerance_grad=1e-12,
                            tolerance_change=1e-14, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = lik.nll(h, x)
        loss.backward()
        return loss

    for _ in range(3):
        opt.step(closure)
    target = float((x.double() - h.double()).pow(2).sum() / x.numel())  # (1/(B d)) sum ||x - f1(z)||^2
    assert abs(lik.gamma / target - 1) < 1e-4, (lik.gamma, target)
    assert abs(float(lik.log_gamma_std.detach()) - 0.5 * math.log(target)) < 1e-4


def test_loss_stage1_is_the_paper_objective():
    m = _model(seed=5)
    x = torch.randn(16, 6, generator=_gen(6))
    with torch.no_grad():
        m.likelihood.log_gamma_std.fill_(-0.7)
        out = m.loss_stage1(x, generator=_gen(7))
        _, mu, logvar = m.encode(x)
        sd = torch.exp(0.5 * logvar)
        z = mu + sd * torch.randn(mu.shape, generator=_gen(7))
        f = m.stage1.decoder(z)
        g = math.exp(-0.7)
        recon = ((x - f).pow(2) / (2 * g ** 2) + math.log(g) + 0.5 * math.log(2 * math.pi)).sum(1).mean()
        kl = 0.5 * (mu.pow(2) + sd.pow(2) - 2 * sd.log() - 1).sum(1).mean()
    assert set(out) == {"loss", "recon", "kl", "kl_cat", "kl_gauss"}
    torch.testing.assert_close(out["recon"], recon, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out["kl"], kl, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out["loss"], recon + kl, rtol=1e-5, atol=1e-5)
    assert float(out["kl_cat"]) == 0.0 and torch.equal(out["kl_gauss"], out["kl"])
    # the common interface
    torch.testing.assert_close(m.loss(x, generator=_gen(7))["loss"], out["loss"])
    fw = m(x, generator=_gen(7))
    assert set(fw) == {"xhat", "z", "mu", "logvar", "logits"} and fw["logits"] is None
    torch.testing.assert_close(fw["z"], z)
    torch.testing.assert_close(fw["xhat"], m.decode(z))


# -- stage 2 -------------------------------------------------------------------------------------------
def mixture_codes(n=2000, k=4, seed=0):
    """Frozen [mu, logvar] codes far from N(0, I): 4 separated clusters, small posterior variances."""
    g = _gen(seed)
    centres = torch.zeros(4, k)
    centres[0, 0], centres[1, 0], centres[2, 1], centres[3, 1] = 3.0, -3.0, 3.0, -3.0
    mu = centres[torch.randint(0, 4, (n,), generator=g)] + 0.3 * torch.randn(n, k, generator=g)
    mu[:, 2:] *= 0.2
    return torch.cat([mu, torch.full((n, k), math.log(0.01))], 1)


def test_stage2_lowers_mmd_to_standard_normal():
    codes = mixture_codes()
    m = _model(seed=0, stage2_width=64, stage2_depth=3)
    g = _gen(1)
    steps, lr = 1000, 2e-3
    opt = torch.optim.Adam(m.stage_parameters("stage2"), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps, eta_min=0.1 * lr)
    frozen = [p.detach().clone() for p in m.stage_parameters("stage1")]
    for _ in range(steps):
        out = m.loss_stage2(codes[torch.randint(0, codes.shape[0], (128,), generator=g)], generator=g)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        sched.step()
    z = m.stage2_inputs(codes, generator=_gen(2))          # samples of q(z) (stage 1)
    u = m.encode_stage2(codes, generator=_gen(3))           # samples of q(u) (stage 2)
    before = mmd_to_standard_normal(z, generator=_gen(4))
    after = mmd_to_standard_normal(u, generator=_gen(4))
    assert before > 0.05 and after < before / 10, (before, after)
    kl = float(out["kl"].detach())
    assert math.isfinite(kl) and 0 < kl < 50, kl
    # stage 1 is untouched by the stage-2 optimiser
    assert all(torch.equal(a, b) for a, b in zip(frozen, m.stage_parameters("stage1")))


def test_loss_stage2_draws_fresh_eps_and_mean_ablation_is_deterministic():
    m = _model(seed=1)
    codes = mixture_codes(n=32)
    mu = codes[:, :4]
    g = _gen(0)
    a, b = m.stage2_inputs(codes, g), m.stage2_inputs(codes, g)
    assert not torch.equal(a, b)
    # z - mu has the posterior's standard deviation (0.1)
    big = mixture_codes(n=4000)
    r = m.stage2_inputs(big, _gen(1)) - big[:, :4]
    assert abs(float(r.std()) / 0.1 - 1) < 0.03
    l1, l2 = m.loss_stage2(codes, g)["loss"], m.loss_stage2(codes, g)["loss"]
    assert float(l1.detach()) != float(l2.detach())
    mean = _model(seed=1, stage2_input="mean")
    assert torch.equal(mean.stage2_inputs(codes, g), mu)
    assert torch.equal(mean.stage2_inputs(codes, g), mean.stage2_inputs(codes, _gen(9)))
    torch.testing.assert_close(mean.loss_stage2(codes, _gen(5))["loss"], mean.loss_stage2(codes, _gen(5))["loss"])
    # same u-noise seeds, different inputs: the ablation's loss differs from the sampled one
    with torch.no_grad():
        assert float(mean.loss_stage2(codes, _gen(5))["loss"]) != float(m.loss_stage2(codes, _gen(5))["loss"])
    # the stage-2 loss form on R^k with stage 2's own variance
    out = m.loss_stage2(codes, _gen(5))
    assert set(out) == {"loss", "recon", "kl", "kl_cat", "kl_gauss"}
    out["loss"].backward()
    assert m.stage2.likelihood.log_gamma_std.grad is not None
    assert m.likelihood.log_gamma_std.grad is None          # stage 1 gets no gradient from stage 2
    assert all(p.grad is None for p in m.stage_parameters("stage1"))


def test_posterior_codes_eval_mode_and_float32():
    m = _model(seed=2)
    m.train()
    x = torch.randn(10, 6, generator=_gen(0)).double()
    c = m.posterior_codes(x.float(), batch_size=3)
    assert c.shape == (10, 8) and c.dtype == torch.float32 and not c.requires_grad
    _, mu, logvar = m.encode(x.float())
    torch.testing.assert_close(c, torch.cat([mu, logvar], 1).detach())
    assert m.training and m.stage1.body.training                # flags restored
    assert m.encode(x.float())[0] is None


# -- generation ----------------------------------------------------------------------------------------
def test_generate_shapes_determinism_and_noise():
    m = _model(seed=3)
    x1 = m.generate(7, generator=_gen(0))
    assert x1.shape == (7, 6) and x1.dtype == torch.float32
    torch.testing.assert_close(m.generate(7, generator=_gen(0)), x1, rtol=0, atol=0)
    assert not torch.equal(m.generate(7, generator=_gen(1)), x1)
    # generate = f1(z) of the two-stage z
    torch.testing.assert_close(m.decode(m.sample_latent(7, generator=_gen(0))), x1)
    off = _model(seed=3, stage2_noise=False)
    z_on, z_off = m.sample_latent(4000, generator=_gen(2)), off.sample_latent(4000, generator=_gen(2))
    assert not torch.equal(z_on, z_off)
    # the stage-2 decoder noise has standard deviation g_z = exp(log_gamma_std) (1 at init)
    assert abs(float((z_on - z_off).std()) - 1.0) < 0.03
    with torch.no_grad():
        torch.testing.assert_close(z_off, off.stage2.decoder(torch.randn(4000, 4, generator=_gen(2))))
        # alpha scales u
        torch.testing.assert_close(off.sample_latent(5, alpha=0.0, generator=_gen(3)),
                                   off.stage2.decoder(torch.zeros(5, 4)))
    s1 = m.generate_stage1_only(5, alpha=0.5, generator=_gen(4))
    assert s1.shape == (5, 6)
    with torch.no_grad():
        torch.testing.assert_close(s1, m.decode(0.5 * torch.randn(5, 4, generator=_gen(4))))
    torch.testing.assert_close(m.generate_stage1_only(5, alpha=0.5, generator=_gen(4)), s1, rtol=0, atol=0)
    with pytest.raises(ValueError, match="routing"):
        m.generate(2, routing="bogus")


def test_generate_images_library_arch():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        m = TwoStageVAE("image", (1, 8, 8), 16)
    x = m.generate(3, generator=_gen(0))
    assert x.shape == (3, 1, 8, 8) and float(x.min()) >= 0 and float(x.max()) <= 1
    assert m.generate_stage1_only(3, generator=_gen(0)).shape == (3, 1, 8, 8)
    out = m.loss_stage1(torch.rand(4, 1, 8, 8, generator=_gen(1)), generator=_gen(2))
    out["loss"].backward()
    assert m.posterior_codes(torch.rand(4, 1, 8, 8)).shape == (4, 32)


# -- parameters ----------------------------------------------------------------------------------------
def test_param_counts_and_stage_parameters():
    m = _model(seed=4, stage2_latent=3)
    p1, p2 = m.stage_parameters("stage1"), m.stage_parameters("stage2")
    ids1, ids2 = {id(p) for p in p1}, {id(p) for p in p2}
    assert not ids1 & ids2
    assert ids1 | ids2 == {id(p) for p in m.parameters()}
    assert id(m.likelihood.log_gamma_std) in ids1 and id(m.stage2.likelihood.log_gamma_std) in ids2
    assert m.likelihood is m.stage1.likelihood and m.likelihood is not m.stage2.likelihood
    assert isinstance(m.likelihood, LearnedGaussian) and m.stage2.likelihood.kind == "vector"
    n1, n2 = sum(p.numel() for p in p1), sum(p.numel() for p in p2)
    assert m.param_counts() == {"total": n1 + n2, "prior": n2}
    # stage 2: (6->... ) the MLP with skips, latent u of size 3
    w, k, k2 = 32, 4, 3
    enc = (k * w + w) + (w * w + w) + 2 * ((k + w) * k2 + k2)
    dec = (k2 * w + w) + (w * w + w) + ((k2 + w) * k + k)
    assert n2 == enc + dec + 1
    # the state dict holds the stage-1 likelihood once
    assert sum("log_gamma_std" in key for key in m.state_dict()) == 2
    # a given likelihood is used as stage 1's
    lik = LearnedGaussian("vector", 1e-3)
    assert _model(likelihood=lik).likelihood is lik


def test_gamma_floor_binds_and_is_reported():
    m = _model(seed=5, gamma_min=0.25)
    assert m.likelihood.gamma_min == 0.25 and m.stage2.likelihood.gamma_min == 0.25
    x = 0.05 * torch.randn(64, 6, generator=_gen(0))
    codes = torch.cat([0.05 * torch.randn(64, 4, generator=_gen(1)), torch.full((64, 4), -9.0)], 1)
    opt = torch.optim.Adam(m.parameters(), lr=3e-2)
    g = _gen(2)
    for _ in range(60):
        loss = m.loss_stage1(x, g)["loss"] + m.loss_stage2(codes, g)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    for lik in (m.likelihood, m.stage2.likelihood):
        st = lik.stats()
        assert st["gamma_floor_binds"] == 1.0
        assert abs(st["gamma"] - 0.25) < 1e-6
        assert float(lik.log_gamma_std.detach()) < 0.5 * math.log(0.25)
    assert _model().likelihood.stats() == {"gamma": 1.0, "gamma_floor_binds": 0.0}


# -- MMD -----------------------------------------------------------------------------------------------
def test_mmd_to_standard_normal():
    z = torch.randn(1500, 4, generator=_gen(0))
    null = mmd_to_standard_normal(z, generator=_gen(1))
    assert abs(null) < 1.5e-3, null
    shifted = z.clone()
    shifted[:, 0] += 0.5
    alt = mmd_to_standard_normal(shifted, generator=_gen(1))
    assert alt > 5e-3 and alt > 10 * abs(null), (alt, null)
    assert mmd_to_standard_normal(2 * z, generator=_gen(1)) > 5e-3
    # chunking changes nothing but rounding
    for chunk in (257, 4096):
        assert abs(mmd_to_standard_normal(shifted, generator=_gen(1), chunk=chunk) - alt) < 1e-12
    small = z[:40]
    assert abs(mmd_to_standard_normal(small, generator=_gen(3), chunk=1)
               - mmd_to_standard_normal(small, generator=_gen(3))) < 1e-12
    # n_ref, bandwidth and the unbiased estimator by hand on a tiny case
    zs = torch.randn(5, 2, generator=_gen(4), dtype=torch.float64)
    y = torch.randn(7, 2, generator=_gen(5), dtype=torch.float64)
    C = 3.0

    def k(a, b):
        return C / (C + torch.cdist(a, b).pow(2))

    kxx, kyy, kxy = k(zs, zs), k(y, y), k(zs, y)
    ref = ((kxx.sum() - 5) / 20 + (kyy.sum() - 7) / 42 - 2 * kxy.mean()).item()
    got = mmd_to_standard_normal(zs, n_ref=7, generator=_gen(5), bandwidth=C, chunk=2)
    assert abs(got - ref) < 1e-12
    with pytest.raises(ValueError, match="chunk"):
        mmd_to_standard_normal(z, chunk=0)
    with pytest.raises(ValueError, match="bandwidth"):
        mmd_to_standard_normal(z, bandwidth=-1.0)
    with pytest.raises(ValueError, match="z"):
        mmd_to_standard_normal(z[0])


# -- the paper's InfoGAN architecture ------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (3, 64, 64)])
def test_paper_arch_forward_backward(shape):
    with torch.random.fork_rng():
        torch.manual_seed(0)
        m = TwoStageVAE("image", shape, 16, arch="paper", stage2_width=64)
    assert m.stage1.encoder_sd == "softplus"
    x = torch.rand(2, *shape, generator=_gen(0))
    out = m.loss_stage1(x, generator=_gen(1))
    out["loss"].backward()
    assert torch.isfinite(out["loss"])
    assert all(p.grad is not None for p in m.stage_parameters("stage1"))
    assert m(x, generator=_gen(1))["xhat"].shape == (2, *shape)
    codes = m.posterior_codes(x)
    assert codes.shape == (2, 32) and bool(torch.isfinite(codes).all())
    assert bool((codes[:, 16:] >= 2 * math.log(1e-6) - 1e-3).all())   # sigma >= 1e-6
    m.eval()
    assert m.generate(2, generator=_gen(2)).shape == (2, *shape)


# -- validation ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("kw, name", [
    ({"stage2_input": "mu"}, "stage2_input"),
    ({"stage2_width": 0}, "stage2_width"),
    ({"stage2_depth": 0}, "stage2_depth"),
    ({"stage2_latent": 0}, "stage2_latent"),
    ({"arch": "resnet"}, "arch"),
    ({"arch": "paper"}, "arch"),                 # vectors have no InfoGAN net
    ({"gamma_min": -1.0}, "gamma_min"),
    ({"encoder_sd": "relu"}, "encoder_sd"),
])
def test_bad_constructor_arguments(kw, name):
    with pytest.raises(ValueError, match=name):
        _model(**kw)


def test_bad_call_arguments():
    with pytest.raises(ValueError, match="arch"):
        TwoStageVAE("image", (1, 8, 8), 4, arch="paper")
    m = _model()
    with pytest.raises(ValueError, match="codes"):
        m.loss_stage2(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="codes"):
        m.loss_stage2(torch.zeros(3, 8, 1))
    with pytest.raises(ValueError, match="stage"):
        m.stage_parameters("stage3")
