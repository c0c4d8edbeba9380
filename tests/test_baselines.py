"""The paper's baselines (VampPrior, hierarchical, MoG prior, GM-VAE): training through the real CLI on
digits and clusters, their priors and KL estimates against direct computations, sampling from their own
priors, the Gumbel temperature schedule, parameter counts (paper Table 4), config and exact resume."""
import json
import math
import os

import numpy as np
import pytest
import torch
import yaml

import xvae_fast as xf
from xvae_fast.config import TrainConfig, load_config_file, resolve, save_config
from xvae_fast.errors import ConfigError
from xvae_fast.models import (GMVAE, VAE, HierarchicalVAE, MoGPriorVAE, VampPriorVAE, build_models, get_ops,
                              gumbel_temperature)
from xvae_fast.models.gmvae import gumbel_softmax
from xvae_fast.training import load_run

from train_utils import TINY_CLUSTERS, TINY_DIGITS, load_ck, one_thread, train

NEW_MODELS = ["vamp", "hierarchical", "mog", "gmvae"]


def _normal_logpdf(z, mean, std):
    return torch.distributions.Normal(mean, std).log_prob(z).sum(-1)


# -- training through the CLI -------------------------------------------------------------------------
@pytest.mark.parametrize("data", ["clusters", "digits"])
@pytest.mark.parametrize("model", NEW_MODELS)
def test_each_baseline_trains(tmp_path, model, data):
    run = str(tmp_path / "run")
    tiny = TINY_CLUSTERS if data == "clusters" else TINY_DIGITS
    assert train(*tiny, "--model", model, "--epochs-vae", "3", "--no-outputs", "--out", run) == 0
    ck = load_ck(run)
    assert ck["stage"] == "done" and ck["models"]["ae"] is None and ck["prior"] is None  # no stage 1
    rows = ck["history"]
    assert [r["stage"] for r in rows] == ["vae"] * 3
    for r in rows:
        for k in ("train_loss", "train_recon", "train_kl", "test_loss", "test_recon", "test_kl"):
            assert np.isfinite(r[k]), (k, r)
        assert r["test_loss"] == pytest.approx(r["test_recon"] + r["test_kl"], rel=1e-5, abs=1e-6)
    assert rows[-1]["test_loss"] < rows[0]["test_loss"]  # it learns
    if model == "gmvae":
        assert all(r["train_kl_cat"] > 0 for r in rows)  # the cluster variable's KL is logged apart
    else:
        assert all(r["train_kl_cat"] == 0 for r in rows)
    with open(os.path.join(run, "summary.json")) as f:
        s = json.load(f)
    assert s["model"] == model and s["plan"] == model and "stage1_params" not in s
    _, _, vae, _ = load_run(run)
    assert vae.param_counts() == s["params"] and s["params"]["prior"] > 0
    x = vae.generate(6, 1.0, generator=torch.Generator().manual_seed(0))
    assert x.shape == (6,) + tuple(ck["data_info"]["shape"]) and torch.isfinite(x).all()


def test_baseline_outputs_and_sample_cli(tmp_path):
    """A baseline run writes the figures and samples, and `python -m xvae_fast.sample` reads it."""
    from xvae_fast.sample import main as sample_main
    run = str(tmp_path / "vamp")
    assert train(*TINY_DIGITS, "--model", "vamp", "--pseudo-inputs", "7", "--out", run) == 0
    for name in ("samples.png", "samples.npy", "reconstructions.png", "alpha_sweep.png", "curves.png"):
        assert os.path.isfile(os.path.join(run, name)), name
    out = str(tmp_path / "s.npy")
    with one_thread():
        assert sample_main(["--run", run, "--n", "9", "--seed", "3", "--out", out]) == 0
        assert sample_main(["--run", run, "--n", "9", "--seed", "3", "--routing", "per-row",
                            "--out", str(tmp_path / "t.npy")]) == 0
    a, b = np.load(out), np.load(str(tmp_path / "t.npy"))
    assert a.shape == (9, 1, 8, 8) and a.min() >= 0 and a.max() <= 1
    np.testing.assert_array_equal(a, b)  # the learned prior is sampled jointly whatever the routing


# -- VampPrior -------------------------------------------------------------------------------------
def _vamp(seed=0, pseudo=5):
    torch.manual_seed(seed)
    m = VampPriorVAE("vector", (2,), 3, pseudo_inputs=pseudo, hidden=[16])
    with torch.no_grad():  # spread the pseudo-input posteriors far from the origin and make them narrow
        m.pseudo.copy_(torch.randn(pseudo, 2) * 3)
        m.mu_head.weight.mul_(4)
        m.mu_head.bias.copy_(torch.tensor([6.0, -6.0, 6.0]))
        m.logvar_head.weight.zero_()
        m.logvar_head.bias.fill_(-3.0)
    return m


def test_vamp_prior_is_the_mixture_of_the_pseudo_input_posteriors():
    m = _vamp()
    z = torch.randn(50, 3) * 3
    mu, lv = m.encode(m.pseudo)[1:]
    comps = _normal_logpdf(z[:, None, :], mu[None], torch.exp(0.5 * lv)[None])  # (50, C)
    direct = torch.logsumexp(comps, 1) - math.log(5)
    torch.testing.assert_close(m.log_prior(z), direct, rtol=1e-5, atol=1e-4)
    # the loss's KL is the Monte Carlo estimate log q(z|x) - log p(z) at its reparameterised z
    x = torch.randn(8, 2)
    kl = m.loss(x, generator=torch.Generator().manual_seed(1))["kl"]
    _, mu_x, lv_x = m.encode(x)
    eps = torch.randn(mu_x.shape, generator=torch.Generator().manual_seed(1))
    zx = mu_x + torch.exp(0.5 * lv_x) * eps
    expect = (_normal_logpdf(zx, mu_x, torch.exp(0.5 * lv_x)) - m.log_prior(zx)).mean()
    torch.testing.assert_close(kl, expect, rtol=1e-5, atol=1e-5)
    # the pseudo-inputs get gradients through the KL (they are the prior's parameters)
    m.loss(x)["kl"].backward()
    assert m.pseudo.grad is not None and m.pseudo.grad.abs().sum() > 0


def _fits_components(z, means, stds, alpha):
    """Assign each z to its most likely component; return (counts, standardised residuals)."""
    lp = _normal_logpdf(z[:, None, :], means[None], alpha * stds[None])
    c = lp.argmax(1)
    return torch.bincount(c, minlength=means.shape[0]), (z - means[c]) / (alpha * stds[c])


@pytest.mark.parametrize("alpha", [1.0, 0.5])
def test_vamp_samples_come_from_its_own_prior(alpha):
    """Samples are the pseudo-input mixture: uniform over components, each component's Gaussian with
    its std scaled by alpha. Draws from N(0, I) (the bug this guards against) fail the same check."""
    m = _vamp().eval()
    n = 6000
    with torch.no_grad():
        mu, lv = m.encode(m.pseudo)[1:]
        std = torch.exp(0.5 * lv)
        z = m.sample_latent(n, alpha, generator=torch.Generator().manual_seed(2))
    assert z.shape == (n, 3)
    counts, r = _fits_components(z, mu, std, alpha)
    expected = n / 5
    assert (counts - expected).abs().max() < 5 * math.sqrt(expected)  # uniform weights 1/C
    assert r.abs().max() < 6                                          # every draw is on a component
    assert r.mean(0).abs().max() < 0.05 and (r.std(0) - 1).abs().max() < 0.05
    # generate() decodes exactly these latents
    x = m.generate(n, alpha, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(x, m.decode(z))
    # the check has power: N(0, I) draws are nowhere near the components
    _, r0 = _fits_components(torch.randn(n, 3, generator=torch.Generator().manual_seed(2)), mu, std, alpha)
    assert r0.abs().max() > 6


# -- MoG prior -------------------------------------------------------------------------------------
def test_mog_kl_matches_a_direct_computation():
    torch.manual_seed(0)
    m = MoGPriorVAE("vector", (2,), 3, components=4, hidden=[16])
    with torch.no_grad():
        m.prior_logits.copy_(torch.tensor([0.5, -1.0, 0.2, 1.0]))
        m.prior_logvars.copy_(torch.randn(4, 3) * 0.3)
    x = torch.randn(32, 2)
    kl = m.loss(x, generator=torch.Generator().manual_seed(5))["kl"]
    _, mu, lv = m.encode(x)
    z = mu + torch.exp(0.5 * lv) * torch.randn(mu.shape, generator=torch.Generator().manual_seed(5))
    prior = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(logits=m.prior_logits.detach()),
        torch.distributions.Independent(torch.distributions.Normal(
            m.prior_means.detach(), torch.exp(0.5 * m.prior_logvars.detach())), 1))
    direct = (_normal_logpdf(z, mu, torch.exp(0.5 * lv)) - prior.log_prob(z)).mean()
    torch.testing.assert_close(kl, direct, rtol=1e-5, atol=1e-5)
    kl.backward()  # the mixture's parameters are learned
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.prior_parameters())


def test_mog_monte_carlo_kl_is_unbiased():
    """With one N(0, I) component the prior is the standard VAE's: the Monte Carlo KL averages to the
    closed form."""
    torch.manual_seed(0)
    m = MoGPriorVAE("vector", (2,), 3, components=1, hidden=[16])
    with torch.no_grad():
        m.prior_means.zero_()
        m.prior_logvars.zero_()
    x = torch.randn(4, 2).repeat(5000, 1)
    with torch.no_grad():
        mc = m.loss(x, generator=torch.Generator().manual_seed(0))["kl"]
        _, mu, lv = m.encode(x[:4])
        exact = xf.reference.gaussian_kl(mu, lv, torch.zeros(3), torch.ones(3), reduction="mean")
    assert abs(float(mc) - float(exact)) < 0.02 + 0.02 * float(exact)


def test_mog_samples_follow_the_learned_weights():
    torch.manual_seed(0)
    m = MoGPriorVAE("vector", (2,), 2, components=3, hidden=[8]).eval()
    with torch.no_grad():
        m.prior_logits.copy_(torch.log(torch.tensor([0.6, 0.3, 0.1])))
        m.prior_means.copy_(torch.tensor([[10.0, 0.0], [-10.0, 0.0], [0.0, 10.0]]))
        m.prior_logvars.fill_(math.log(0.25))
    z = m.sample_latent(20000, 1.0, generator=torch.Generator().manual_seed(0))
    counts, r = _fits_components(z, m.prior_means.detach(), torch.full((3, 2), 0.5), 1.0)
    np.testing.assert_allclose((counts / 20000).numpy(), [0.6, 0.3, 0.1], atol=0.015)
    assert (r.std(0) - 1).abs().max() < 0.05


# -- hierarchical ----------------------------------------------------------------------------------
def test_hierarchical_posterior_and_prior():
    torch.manual_seed(0)
    m = HierarchicalVAE("vector", (2,), 5, top=2, prior_hidden=12, hidden=[16])
    assert (m.bottom, m.top) == (3, 2)
    x = torch.randn(16, 2)
    g = torch.Generator().manual_seed(3)
    terms = m.loss(x, generator=g)
    # recompute: z2 ~ q(z2|x); p(z1|z2); precision-weighted q(z1|x,z2); two closed-form KLs
    h = m.body(x)
    mu_hat, lv_hat = m.q1_head(h).chunk(2, -1)
    mu2, lv2 = m.q2_head(m.up(h)).chunk(2, -1)
    g = torch.Generator().manual_seed(3)
    z2 = mu2 + torch.exp(0.5 * lv2) * torch.randn(mu2.shape, generator=g)
    mu_p, lv_p = m.prior_net(z2).chunk(2, -1)
    prec = torch.exp(-lv_hat) + torch.exp(-lv_p)
    var1 = 1 / prec
    mu1 = var1 * (mu_hat * torch.exp(-lv_hat) + mu_p * torch.exp(-lv_p))
    N = torch.distributions.Normal
    kl = (torch.distributions.kl_divergence(N(mu2, torch.exp(0.5 * lv2)), N(0.0, 1.0)).sum(1)
          + torch.distributions.kl_divergence(N(mu1, var1.sqrt()), N(mu_p, torch.exp(0.5 * lv_p))).sum(1))
    torch.testing.assert_close(terms["kl"], kl.mean(), rtol=1e-5, atol=1e-5)
    # generation: z2 ~ N(0, alpha^2 I), z1 | z2 ~ N(mu_p(z2), alpha^2 sigma_p(z2)^2)
    with torch.no_grad():
        z = m.sample_latent(4000, 0.5, generator=torch.Generator().manual_seed(1))
        z1, z2 = z[:, :3], z[:, 3:]
        assert abs(float(z2.std()) - 0.5) < 0.03 and abs(float(z2.mean())) < 0.03
        mu_p, lv_p = m.conditional_prior(z2)
        r = (z1 - mu_p) / (0.5 * torch.exp(0.5 * lv_p))
        assert (r.std(0) - 1).abs().max() < 0.05 and r.mean(0).abs().max() < 0.05


# -- GM-VAE ----------------------------------------------------------------------------------------
def test_gumbel_temperature_schedule():
    assert gumbel_temperature(0, 1.0, 0.5, "exp", 100) == 1.0
    assert gumbel_temperature(100, 1.0, 0.5, "exp", 100) == pytest.approx(0.5)
    assert gumbel_temperature(10_000, 1.0, 0.5, "exp", 100) == pytest.approx(0.5)  # held at the end
    r = math.log(2) / 100  # Jang et al.: tau = max(end, start * exp(-r t))
    for t in (1, 17, 50, 99):
        assert gumbel_temperature(t, 1.0, 0.5, "exp", 100) == pytest.approx(math.exp(-r * t))
    assert gumbel_temperature(25, 2.0, 1.0, "linear", 100) == pytest.approx(1.75)
    assert gumbel_temperature(500, 2.0, 1.0, "none", 100) == 2.0
    taus = [gumbel_temperature(t, 1.0, 0.3, "exp", 40) for t in range(60)]
    assert all(a >= b for a, b in zip(taus, taus[1:]))
    with pytest.raises(ValueError, match="anneal"):
        gumbel_temperature(0, 1.0, 0.5, "cosine", 10)


def test_gumbel_softmax_is_a_relaxed_sample_of_the_categorical():
    logits = torch.log(torch.tensor([0.5, 0.3, 0.2])).repeat(20000, 1)
    y = gumbel_softmax(logits, 0.1, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(y.sum(1), torch.ones(20000))
    assert float(y.max(1).values.mean()) > 0.9  # near one-hot at a low temperature
    freq = torch.bincount(y.argmax(1), minlength=3) / 20000.0  # Gumbel-max: argmax ~ Cat(softmax)
    np.testing.assert_allclose(freq.numpy(), [0.5, 0.3, 0.2], atol=0.015)


def test_gmvae_terms_and_samples():
    torch.manual_seed(0)
    m = GMVAE("vector", (2,), 3, clusters=4, tau_start=1.0, tau_end=0.5, anneal_steps=10, hidden=[16])
    m.set_step(10)
    assert float(m.tau) == pytest.approx(0.5)
    x = torch.randn(32, 2)
    t = m.loss(x)
    q = torch.softmax(m.encode(x)[0], -1)
    kl_cat = (q * torch.log(q * 4)).sum(1).mean()  # KL(q(y|x) || uniform)
    torch.testing.assert_close(t["kl_cat"], kl_cat, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(t["kl"], t["kl_cat"] + t["kl_gauss"])
    with torch.no_grad():
        m.prior_means.copy_(torch.eye(4, 3) * 20)
        m.prior_logvars.fill_(math.log(0.01))
        z = m.sample_latent(8000, 2.0, generator=torch.Generator().manual_seed(0))
    counts, r = _fits_components(z, m.prior_means.detach(), torch.full((4, 3), 0.1), 2.0)
    assert (counts - 2000).abs().max() < 5 * math.sqrt(2000)  # p(y) = 1/C
    assert (r.std(0) - 1).abs().max() < 0.05


def test_gmvae_temperature_follows_the_global_step(tmp_path):
    run = str(tmp_path / "g")
    assert train(*TINY_CLUSTERS, "--model", "gmvae", "--gumbel-tau-start", "2", "--gumbel-tau-end", "0.5",
                 "--gumbel-anneal", "linear", "--no-outputs", "--out", run, "--stop-after", "3") == 0
    ck = load_ck(run)  # 10 steps in all (2 epochs of 5); the tau of step 2 (0-based) was the last used
    assert float(ck["models"]["vae"]["tau"]) == pytest.approx(2 - 1.5 * 2 / 10)
    assert train("--resume", run, "--no-progress") == 0
    assert float(load_ck(run)["models"]["vae"]["tau"]) == pytest.approx(0.5)


# -- parameter counts (paper Table 4) ------------------------------------------------------------
def test_parameter_counts():
    kind, shape, K, hidden = "image", (1, 8, 8), 6, (128, 128)
    total = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    std = VAE(kind, shape, K, "standard", hidden=hidden)
    assert std.param_counts() == {"total": total(std), "prior": 0}
    for mode, plan in (("mixture", xf.Plan.preset("full", K)), ("single", None)):
        x = VAE(kind, shape, K, mode, plan, hidden=hidden)
        x.set_prior(xf.MixturePrior(torch.full((K,), 1 / K), torch.randn(K, K), torch.ones(K, K))
                    if mode == "mixture" else xf.MixturePrior.single(torch.zeros(K), torch.ones(K)))
        assert x.param_counts()["prior"] == 0 and x.param_counts()["total"] == total(x)  # frozen buffers
    assert VAE(kind, shape, K, "mixture", xf.Plan.preset("full", K)).param_counts()["total"] \
        == std.param_counts()["total"] + 1024 * K + K  # the routed encoder's extra logits head
    vamp = VampPriorVAE(kind, shape, K, pseudo_inputs=30)
    assert vamp.param_counts() == {"total": total(vamp), "prior": 30 * 64}
    assert vamp.param_counts()["total"] == std.param_counts()["total"] + 30 * 64  # same backbone
    mog = MoGPriorVAE(kind, shape, K, components=10)
    assert mog.param_counts() == {"total": std.param_counts()["total"] + 10 * (2 * K + 1),
                                  "prior": 10 * (2 * K + 1)}
    gm = GMVAE(kind, shape, K, clusters=10)
    assert gm.param_counts()["prior"] == 2 * 10 * K
    assert gm.param_counts()["total"] == total(gm) > std.param_counts()["total"]
    hier = HierarchicalVAE(kind, shape, K, top=2, prior_hidden=32)
    assert hier.param_counts()["prior"] == (2 * 32 + 32) + (32 * 2 * 4 + 2 * 4)  # MLP K2 -> H -> 2 K1
    assert hier.param_counts()["total"] == total(hier)
    assert "tau" not in dict(gm.named_parameters())  # the temperature is a buffer


def test_xvae_summary_reports_zero_prior_parameters(tmp_path):
    run = str(tmp_path / "x")
    assert train(*TINY_CLUSTERS, "--epochs-ae", "1", "--epochs-vae", "1", "--no-outputs", "--out", run) == 0
    with open(os.path.join(run, "summary.json")) as f:
        s = json.load(f)
    _, _, vae, _ = load_run(run)
    assert s["params"] == {"total": vae.param_counts()["total"], "prior": 0}
    assert s["stage1_params"] > 0


# -- config --------------------------------------------------------------------------------------
@pytest.mark.parametrize("ext", ["yaml", "json"])
@pytest.mark.parametrize("model", NEW_MODELS)
def test_baseline_config_round_trip(tmp_path, model, ext):
    extra = {"gumbel_anneal": "linear"} if model == "gmvae" else {}
    cfg = resolve(TrainConfig(dataset="clusters", model=model, seed=3, **extra))
    path = str(tmp_path / f"c.{ext}")
    save_config(cfg, path)
    assert TrainConfig.from_dict(load_config_file(path)) == cfg
    assert resolve(cfg) == cfg and cfg.plan_name == model and not cfg.has_stage1


def test_baseline_defaults_and_errors():
    assert resolve(TrainConfig(model="vamp")).pseudo_inputs == 50                     # digits
    assert resolve(TrainConfig(model="vamp", dataset="mnist:/d")).pseudo_inputs == 200  # paper Table 5
    assert resolve(TrainConfig(model="vamp", dataset="celeba:/d")).pseudo_inputs == 32
    assert resolve(TrainConfig(model="mog", dataset="clusters")).mog_components == 3
    assert resolve(TrainConfig(model="gmvae")).gmvae_clusters == 10
    assert resolve(TrainConfig(model="hierarchical")).hier_top == 5
    # the size options of the other models are refused, by flag
    with pytest.raises(ConfigError, match="--pseudo-inputs is an option of --model vamp; --model mog"):
        resolve(TrainConfig(model="mog", pseudo_inputs=9))
    with pytest.raises(ConfigError, match="--clusters is an option of --model gmvae; --model mog"):
        resolve(TrainConfig(model="mog", gmvae_clusters=4))
    assert resolve(TrainConfig(model="mog")).mog_components == 10
    with pytest.raises(ConfigError, match="--pseudo-inputs must be an integer >= 1"):
        resolve(TrainConfig(model="vamp", pseudo_inputs=0))
    with pytest.raises(ConfigError, match="--latent >= 2"):
        resolve(TrainConfig(model="hierarchical", latent=1))
    with pytest.raises(ConfigError, match="--hier-top must be smaller"):
        resolve(TrainConfig(model="hierarchical", latent=4, hier_top=4))
    with pytest.raises(ConfigError, match="anneals downwards"):
        resolve(TrainConfig(model="gmvae", gumbel_tau_start=0.5, gumbel_tau_end=1.0))
    with pytest.raises(ConfigError, match="--gumbel-anneal"):
        resolve(TrainConfig(model="gmvae", gumbel_anneal="cosine"))
    from xvae_fast.train import parse_config
    cfg, explicit = parse_config(["--model", "gmvae", "--clusters", "7", "--gumbel-anneal-steps", "50"])
    assert (cfg.gmvae_clusters, cfg.gumbel_anneal_steps) == (7, 50)
    assert explicit == {"model", "gmvae_clusters", "gumbel_anneal_steps"}


# -- exact resume ----------------------------------------------------------------------------------
def _assert_same(a, b):
    assert a["stage"] == b["stage"] == "done" and a["step"] == b["step"] and a["prior"] is b["prior"] is None
    wa, wb = a["models"]["vae"], b["models"]["vae"]
    assert set(wa) == set(wb)
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    for pid, st in a["optimizers"]["vae"]["state"].items():
        for k, v in st.items():
            assert torch.equal(torch.as_tensor(v), torch.as_tensor(b["optimizers"]["vae"]["state"][pid][k]))
    strip = lambda h: [{k: v for k, v in r.items() if k not in ("time_s", "eval_s")} for r in h]  # noqa: E731
    assert strip(a["history"]) == strip(b["history"])


@pytest.mark.parametrize("model,stop", [("vamp", 7), ("gmvae", 4)])
def test_resume_of_a_baseline_gives_the_same_weights(tmp_path, model, stop):
    """Stopped mid-epoch and resumed, a baseline ends with the uninterrupted run's exact weights
    (VampPrior pseudo-inputs included; the GM-VAE temperature is a function of the step)."""
    ref, run = str(tmp_path / "ref"), str(tmp_path / "run")
    args = list(TINY_CLUSTERS) + ["--model", model, "--no-outputs"]
    assert train(*args, "--out", ref) == 0
    assert train(*args, "--out", run, "--stop-after", stop) == 0
    assert load_ck(run)["step"] == stop
    assert train("--resume", run, "--no-progress") == 0
    _assert_same(load_ck(ref), load_ck(run))
    with open(os.path.join(run, "config.yaml")) as f:
        assert yaml.safe_load(f)["model"] == model
