"""The importance-sampled negative log-likelihood (xvae_fast/evaluation/nll.py, `evaluate --nll`).

Closed forms: every model family the estimator supports is given a linear decoder p(x|z) = N(Wz + b,
s^2 I) (the real `gaussian` likelihood), so log p(x) is a Gaussian or a Gaussian mixture in closed form
and the estimate must match it within a few of its Monte Carlo standard errors; with the exact
posterior as q (a linear-Gaussian standard VAE) the estimate is exact for k = 1. Then: monotone in k,
independent of the chunking, the refusals, binarisation, and one end-to-end `evaluate --nll`."""
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

import xvae_fast as xf
from xvae_fast.errors import ConfigError
from xvae_fast.evaluation.nll import (MSE_MESSAGE, NLLOptions, NLLUndefinedError, binarize,
                                      check_binarizable, check_nll_supported, dataset_nll,
                                      importance_sampled_nll)
from xvae_fast.models import AVAE, Autoencoder, GMVAE, HierarchicalVAE, MoGPriorVAE, VampPriorVAE
from xvae_fast.models.likelihood import LearnedGaussian, SquaredError
from xvae_fast.models.vae import VAE
from xvae_fast.ops.plans import CoordinatePlan, Plan

from train_utils import TINY_DIGITS, one_thread, train

D, K = 4, 3


def linear(i, o, weight, bias=None):
    lin = nn.Linear(i, o)
    with torch.no_grad():
        lin.weight.copy_(torch.as_tensor(weight, dtype=torch.float32))
        lin.bias.copy_(torch.zeros(o) if bias is None else torch.as_tensor(bias, dtype=torch.float32))
    return lin


def gaussian_lik(s):
    lik = LearnedGaussian("vector")
    with torch.no_grad():
        lik.log_gamma_std.fill_(math.log(s))
    return lik


def set_linear_decoder(model, W, b, s):
    """p(x|z) = N(W z + b, s^2 I) through the model's own `gaussian` likelihood."""
    model.decoder = linear(W.shape[1], W.shape[0], W, b)
    model.likelihood = gaussian_lik(s)
    model.body = nn.Identity()          # the heads read x itself
    return model


def log_gauss(x, mean, cov):
    return torch.distributions.MultivariateNormal(mean, covariance_matrix=cov).log_prob(x)


def exact_mixture(x, W, b, s, log_w, means, variances):
    """log sum_c w_c N(x; W m_c + b, W diag(v_c) W^T + s^2 I), float64 (N,)."""
    terms = [log_w[c] + log_gauss(x, W @ means[c] + b, W @ torch.diag(variances[c]) @ W.T
                                  + s ** 2 * torch.eye(W.shape[0], dtype=torch.float64))
             for c in range(means.shape[0])]
    return torch.logsumexp(torch.stack(terms), 0)


def problem(seed=0, n=12):
    g = torch.Generator().manual_seed(seed)
    W = 0.6 * torch.randn(D, K, generator=g, dtype=torch.float64)
    b = 0.3 * torch.randn(D, generator=g, dtype=torch.float64)
    x = 1.2 * torch.randn(n, D, generator=g, dtype=torch.float64)
    return W, b, 0.8, x


def mixture_moments(log_w, means, variances):
    w = log_w.exp()
    m = (w[:, None] * means).sum(0)
    second = (w[:, None, None] * (torch.diag_embed(variances) + means[:, :, None] * means[:, None, :])).sum(0)
    return m, second - m[:, None] * m[None, :]


def sample_x(n, W, b, s, log_w, means, variances, seed):
    """n draws of the model's own p(x): z from the mixture, x = W z + b + s eps."""
    g = torch.Generator().manual_seed(seed)
    c = torch.multinomial(log_w.exp(), n, replacement=True, generator=g)
    z = means[c] + variances[c].sqrt() * torch.randn(n, means.shape[1], generator=g, dtype=torch.float64)
    return z @ W.T + b + s * torch.randn(n, W.shape[0], generator=g, dtype=torch.float64)


def lmmse_heads(model, W, b, s, m_z, cov_z, widen=1.5):
    """Encoder heads giving the linear least-squares posterior of the moment-matched Gaussian prior
    (its variances widened): a reasonable q, not the exact posterior."""
    cov_x = W @ cov_z @ W.T + s ** 2 * torch.eye(W.shape[0], dtype=torch.float64)
    A = cov_z @ W.T @ torch.linalg.inv(cov_x)
    post = cov_z - A @ W @ cov_z
    model.mu_head = linear(W.shape[0], W.shape[1], A, m_z - A @ (W @ m_z + b))
    model.logvar_head = linear(W.shape[0], W.shape[1], torch.zeros(W.shape[1], W.shape[0]),
                               torch.log(widen * torch.diagonal(post)))


def check_close(model, x, exact, k=2000, seed=0, chunk=None):
    """The estimate's mean over examples within 4 Monte Carlo standard errors (+ float32 slack) of the
    exact mean, and every example within 5 of its own."""
    g = torch.Generator().manual_seed(seed)
    with one_thread():
        nll, diag = importance_sampled_nll(model, x.float(), k, chunk=chunk, generator=g,
                                           return_diagnostics=True)
    err = -nll - exact
    se = diag["mc_stderr"]
    # the proposals are usable, so the standard errors are meaningful (the direct prior-source
    # coordinates of split-1/3 propose from the prior: a few examples get a small ESS)
    assert torch.isfinite(nll).all() and diag["ess"].min() > 5 and diag["ess"].median() > 0.05 * k
    assert (err.abs() <= 5 * se + 1e-4).all(), (err, se)
    assert abs(float(err.mean())) <= 4 * float(se.pow(2).mean().sqrt()) / math.sqrt(len(se)) + 1e-4
    return nll, diag


# -- the standard VAE with the exact posterior ------------------------------------------------------------

def standard_vae(exact_posterior=True, s=0.5, seed=0):
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(D, K, generator=g, dtype=torch.float64))
    d = torch.tensor([1.5, 0.8, 0.4], dtype=torch.float64)
    W = Q * d                                   # orthogonal columns: the posterior is diagonal
    b = 0.2 * torch.randn(D, generator=g, dtype=torch.float64)
    var = 1.0 / (1.0 + d ** 2 / s ** 2)         # posterior variances
    A = var[:, None] * W.T / s ** 2             # posterior mean = A (x - b)
    model = set_linear_decoder(VAE("vector", (D,), K, "standard", None, hidden=(8,)), W, b, s)
    if not exact_posterior:                     # a poorer q: shifted and 2.5x wider
        A, var = 0.7 * A, 2.5 * var
    model.mu_head = linear(D, K, A, -(A @ b))
    model.logvar_head = linear(D, K, torch.zeros(K, D), torch.log(var))
    return model.eval(), W, b, s


def exact_linear_gaussian(x, W, b, s):
    return log_gauss(x, b, W @ W.T + s ** 2 * torch.eye(D, dtype=torch.float64))


def test_exact_posterior_gives_the_exact_nll_at_k_1():
    model, W, b, s = standard_vae(exact_posterior=True)
    x = problem(1)[3]
    exact = exact_linear_gaussian(x, W, b, s)
    g = torch.Generator().manual_seed(0)
    for k in (1, 7):
        nll, diag = importance_sampled_nll(model, x.float(), k, generator=g, return_diagnostics=True)
        assert nll.dtype == torch.float64 and nll.shape == (x.shape[0],)
        torch.testing.assert_close(-nll, exact, rtol=0, atol=2e-4)
        # every weight is p(x): the effective sample size is k
        torch.testing.assert_close(diag["ess"], torch.full_like(diag["ess"], float(k)), rtol=1e-3, atol=0)


def test_approximate_posterior_matches_the_closed_form_within_its_standard_error():
    model, W, b, s = standard_vae(exact_posterior=False)
    x = problem(2)[3]
    nll, diag = check_close(model, x, exact_linear_gaussian(x, W, b, s))
    assert (diag["mc_stderr"] > 1e-4).all()     # q is not the posterior: the test has teeth


def test_mean_estimate_rises_with_k_and_chunking_does_not_change_the_draws():
    model, W, b, s = standard_vae(exact_posterior=False)
    g = torch.Generator().manual_seed(3)
    x = 1.5 * torch.randn(200, D, generator=g, dtype=torch.float64)
    exact = exact_linear_gaussian(x, W, b, s)
    with one_thread():
        est = {k: -importance_sampled_nll(model, x.float(), k, generator=torch.Generator().manual_seed(k))
               for k in (1, 10, 100)}
    for lo, hi in ((1, 10), (10, 100)):
        d = est[hi] - est[lo]                   # paired over examples
        assert float(d.mean()) > -3 * float(d.std()) / math.sqrt(len(d)), (lo, hi)
    gap = est[100] - est[1]
    assert float(gap.mean()) > 5 * float(gap.std()) / math.sqrt(len(gap))   # strictly rises here
    under = exact - est[100]                    # a lower bound of log p(x) in expectation
    assert float(under.mean()) > -3 * float(under.std()) / math.sqrt(len(under))
    # the same generator state gives the same draws whatever the chunk (one draw per call)
    xs = x[:30].float()
    runs = [importance_sampled_nll(model, xs, 50, chunk=c, generator=torch.Generator().manual_seed(9))
            for c in (1, 7, 50, None)]
    for r in runs[1:]:
        torch.testing.assert_close(r, runs[0], rtol=0, atol=1e-5)


# -- X-VAE: the frozen mixture prior and the routed-transport proposals --------------------------------

def xvae(plan, seed=0, mode="mixture"):
    W, b, s, _ = problem(seed)
    g = torch.Generator().manual_seed(10 + seed)
    w = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    M = torch.randn(K, K, generator=g, dtype=torch.float64)
    S = 0.5 + 0.5 * torch.rand(K, K, generator=g, dtype=torch.float64)
    model = VAE("vector", (D,), K, mode, plan, hidden=(8,), kl="tight")
    if mode == "single":
        model.set_prior(xf.MixturePrior.single(M[0].float(), S[0].float()))
    else:
        model.set_prior(xf.MixturePrior(w.float(), M.float(), S.float()))
    set_linear_decoder(model, W, b, s)
    prior = model.prior
    log_w, means, var = prior.weights.double().log(), prior.means.double(), prior.stds.double() ** 2
    lmmse_heads(model, W, b, s, *mixture_moments(log_w, means, var))
    return model.eval(), (W, b, s, log_w, means, var)


# a custom plan with one component per row shared by two tied coordinates (transport and direct)
TIED = Plan([CoordinatePlan("prior", "row", "prior", "transport"),
             CoordinatePlan("home", "none", "prior", "transport"),
             CoordinatePlan("prior", "row", "prior", "direct")], name="tied")


@pytest.mark.parametrize("plan", ["matched", "full", "split-1/3", "k1-pp-np", "k1-pp-nq", "tied", "single"])
def test_xvae_matches_the_closed_form_mixture(plan):
    if plan == "single":
        model, p = xvae(None, mode="single")
    else:
        model, p = xvae(TIED if plan == "tied" else Plan.preset(plan, K))
    x = sample_x(12, *p, seed=1)
    assert check_nll_supported(model) == "vae"
    check_close(model, x, exact_mixture(x, *p))


def test_xvae_plans_routed_by_pi_q_are_refused():
    for name in ("interleaved", "k1-pq-np", "k1-pq-nq"):
        model, _ = xvae(Plan.preset(name, K))
        with pytest.raises(NLLUndefinedError, match="pi_q"):
            check_nll_supported(model)
        with pytest.raises(ConfigError, match=name):
            importance_sampled_nll(model, torch.zeros(2, D), 5)


# -- the baselines ----------------------------------------------------------------------------------------

def baseline(cls, **kw):
    W, b, s, x = problem(4)
    torch.manual_seed(5)
    model = set_linear_decoder(cls("vector", (D,), K, hidden=(8,), **kw), W, b, s)
    return model, W, b, s, x


@pytest.mark.parametrize("cls,kw", [(MoGPriorVAE, {"components": 3}), (VampPriorVAE, {"pseudo_inputs": 3})])
def test_learned_mixture_priors_match_the_closed_form(cls, kw):
    model, W, b, s, _ = baseline(cls, **kw)
    model.mu_head = linear(D, K, 0.3 * W.T)
    model.logvar_head = linear(D, K, torch.zeros(K, D), torch.full((K,), -0.3))
    if cls is MoGPriorVAE:
        with torch.no_grad():
            model.prior_logvars.uniform_(-1.0, 0.0)
        lw, m, lv = (t.detach().double() for t in model.prior_components())
        lmmse_heads(model, W, b, s, *mixture_moments(lw, m, lv.exp()))
    lw, m, lv = (t.detach().double() for t in model.eval().prior_components())
    x = sample_x(12, W, b, s, lw, m, lv.exp(), seed=2)
    check_close(model, x, exact_mixture(x, W, b, s, lw, m, lv.exp()))


def test_gmvae_marginalises_y_on_both_sides():
    model, W, b, s, x = baseline(GMVAE, clusters=3)
    C = 3
    model.logits_head = linear(D, C, 0.5 * torch.randn(C, D))
    heads = torch.zeros(C, 2, K, D)
    heads[:, 0] = 0.3 * W.T.float()
    bias = torch.zeros(C, 2, K)
    bias[:, 0] = 0.3 * torch.randn(C, K)
    bias[:, 1] = -0.3
    model.heads = linear(D, C * 2 * K, heads.reshape(-1, D), bias.reshape(-1))
    with torch.no_grad():
        model.prior_logvars.uniform_(-1.0, 0.0)
    m, v = model.prior_means.detach().double(), model.prior_logvars.detach().double().exp()
    exact = exact_mixture(x, W, b, s, torch.full((C,), -math.log(C), dtype=torch.float64), m, v)
    assert check_nll_supported(model.eval()) == "gmvae"
    check_close(model, x, exact)


def test_hierarchical_vae_samples_both_levels_and_uses_the_joint_densities():
    model, W, b, s, x = baseline(HierarchicalVAE, top=1, prior_hidden=8)
    K1, K2 = model.bottom, model.top
    A = torch.tensor([[0.8], [-0.5]], dtype=torch.float64)
    a = torch.tensor([0.3, -0.2], dtype=torch.float64)
    c = torch.tensor([-0.4, -0.8], dtype=torch.float64)            # log-variances of p(z1|z2)
    # linear conditional prior: mu_p = A z2 + a, logvar_p = c, so [z1, z2] is jointly Gaussian
    model.prior_net = linear(K2, 2 * K1, torch.cat([A, torch.zeros(K1, K2, dtype=torch.float64)]),
                             torch.cat([a, c]))
    model.q1_head = linear(D, 2 * K1, torch.cat([0.3 * W[:, :K1].T, torch.zeros(K1, D, dtype=torch.float64)]),
                           torch.cat([torch.zeros(K1), torch.full((K1,), 0.3)]))
    model.up = nn.Identity()
    model.q2_head = linear(D, 2 * K2, torch.cat([0.3 * W[:, K1:].T, torch.zeros(K2, D, dtype=torch.float64)]),
                           torch.zeros(2 * K2))
    mean_z = torch.cat([a, torch.zeros(K2, dtype=torch.float64)])
    cov_z = torch.zeros(K, K, dtype=torch.float64)
    cov_z[:K1, :K1] = A @ A.T + torch.diag(c.exp())
    cov_z[:K1, K1:] = A
    cov_z[K1:, :K1] = A.T
    cov_z[K1:, K1:] = torch.eye(K2, dtype=torch.float64)
    exact = log_gauss(x, W @ mean_z + b, W @ cov_z @ W.T + s ** 2 * torch.eye(D, dtype=torch.float64))
    assert check_nll_supported(model.eval()) == "hierarchical"
    check_close(model, x, exact)


# -- refusals ---------------------------------------------------------------------------------------------

def test_refusals_name_the_reason():
    vae = VAE("vector", (D,), K, "standard", None, hidden=(8,), likelihood=SquaredError("vector"))
    with pytest.raises(NLLUndefinedError, match="--likelihood mse is a squared error, not a density"):
        check_nll_supported(vae)
    assert MSE_MESSAGE.endswith("the NLL is not defined")
    with pytest.raises(NLLUndefinedError, match="deterministic autoencoder"):
        check_nll_supported(Autoencoder("vector", (D,), K, hidden=(8,), likelihood=gaussian_lik(1.0)))
    with pytest.raises(NLLUndefinedError, match="AVAE.*deterministic"):
        check_nll_supported(AVAE("vector", (D,), K, hidden=(8,), likelihood=gaussian_lik(1.0)))
    model = standard_vae()[0]
    for k in (0, -3, 2.5, True):
        with pytest.raises(ConfigError, match="--nll-k"):
            importance_sampled_nll(model, torch.zeros(2, D), k)
        with pytest.raises(ConfigError, match="--nll-k"):
            NLLOptions(k=k).validate()
    with pytest.raises(ConfigError, match="--nll-n"):
        NLLOptions(n=0).validate()


def test_binarize_is_fixed_per_example_and_checks_the_data():
    from xvae_fast.data.base import DataInfo, TensorData
    # (not seed 0: intensities drawn from the binariser's own stream would all binarise to 0)
    split = TensorData(torch.rand(25, 1, 4, 4, generator=torch.Generator().manual_seed(123)))
    full = binarize(split, np.arange(25), batch=10)
    part = binarize(split, [3, 17, 24], batch=10)
    assert set(full.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(part, full[[3, 17, 24]])
    assert torch.equal(full, binarize(split, np.arange(25), batch=10))
    assert abs(float(full.mean()) - float(split.tensor.mean())) < 0.1
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        binarize(TensorData(torch.rand(5, 1, 4, 4) * 1.5), [0, 1])
    with pytest.raises(ConfigError, match="--nll-binarize.*vectors"):
        check_binarizable(DataInfo("clusters", "vector", (2,)), TensorData(torch.rand(5, 2)))


def test_dataset_nll_batches_and_reports_mean_and_standard_error():
    model, W, b, s = standard_vae(exact_posterior=True)
    x = problem(6, n=23)[3]
    r = dataset_nll(model, x.float(), 3, batch=5, seed=0)
    exact = -exact_linear_gaussian(x, W, b, s)
    assert r["n"] == 23 and r["k"] == 3 and r["values"].shape == (23,)
    assert r["mean"] == pytest.approx(float(exact.mean()), abs=2e-4)
    assert r["stderr"] == pytest.approx(float(exact.std() / math.sqrt(23)), rel=1e-3)
    sub = dataset_nll(model, x.float(), 3, batch=4, indices=[2, 5, 11])
    torch.testing.assert_close(sub["values"], exact[[2, 5, 11]], rtol=0, atol=2e-4)


# -- the command line -------------------------------------------------------------------------------------

def evaluate(*args) -> int:
    from xvae_fast.evaluate import main
    with one_thread():
        return main([str(a) for a in args])


QUICK = ["--metrics", "rec", "--alpha", "none", "--n-fake", "16", "--no-figures", "--no-progress",
         "--quiet"]


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    run = str(tmp_path_factory.mktemp("nll_runs") / "digits")
    # X-VAE with the library defaults on digits: the bernoulli likelihood, the matched plan
    assert train(*TINY_DIGITS, "--no-outputs", "--out", run) == 0
    return run


def test_evaluate_nll_end_to_end(digits_run, tmp_path, capsys):
    out = tmp_path / "eval"
    assert evaluate("--run", digits_run, "--out", out, "--nll", "--nll-k", "20", "--nll-binarize",
                    "--no-expost", *QUICK) == 0
    rep = json.loads((out / "eval.json").read_text(encoding="utf-8"))
    e = rep["metrics"]["nll"]
    assert e["k"] == 20 and e["n"] == 32 and e["likelihood"] == "bernoulli" and e["family"] == "vae"
    assert math.isfinite(e["mean"]) and math.isfinite(e["stderr"]) and e["stderr"] > 0
    # 8x8 binary images: a fair coin per pixel gives 64 log 2 = 44.4 nats; this 2-epoch model is near it
    assert 0 < e["mean"] < 2 * 64 * math.log(2)
    assert e["binarization"]["binarized"] is True and e["binarization"]["seed"] == 0
    assert 1 <= e["ess_mean"] <= 20 and "N(mu, diag sigma^2)" in e["proposal"]
    md = (out / "eval.md").read_text(encoding="utf-8")
    assert "NLL (k=20)↓" in md and "- NLL: importance-sampled" in md
    # repeatable: the subset, the binarisation and the draws are seeded; the ex-post reference (no
    # density, so no NLL) is evaluated beside it and its row keeps the table's columns
    capsys.readouterr()
    assert evaluate("--run", digits_run, "--out", tmp_path / "again", "--nll", "--nll-k", "20",
                    "--nll-binarize", *QUICK) == 0
    again = json.loads((tmp_path / "again" / "eval.json").read_text(encoding="utf-8"))["metrics"]["nll"]
    assert again["mean"] == e["mean"]
    assert "nll" not in json.loads((tmp_path / "again" / "eval_expost.json").read_text())["metrics"]
    rows = [r for r in capsys.readouterr().out.splitlines() if r.startswith("|")]
    assert len(rows) == 4 and len({r.count("|") for r in rows}) == 1 and "| – |" in rows[3]


def test_evaluate_nll_errors_exit_2(digits_run, tmp_path, capsys):
    for args, msg in ((["--nll", "--nll-k", "0"], "--nll-k"), (["--nll", "--nll-k", "-5"], "--nll-k"),
                      (["--nll-k", "10"], "add --nll"), (["--nll-binarize"], "add --nll"),
                      (["--nll", "--nll-n", "0"], "--nll-n")):
        assert evaluate("--run", digits_run, "--out", tmp_path, *args, "--no-expost", *QUICK) == 2, args
        assert msg in capsys.readouterr().err, args
    mse_run = str(tmp_path / "mse")
    assert train("--dataset", "digits", "--limit", "160", "--model", "vae", "--latent", "4",
                 "--epochs-vae", "0", "--likelihood", "mse", "--no-outputs", "--no-progress",
                 "--out", mse_run) == 0
    assert evaluate("--run", mse_run, "--out", tmp_path, "--nll", "--no-expost", *QUICK) == 2
    assert "--likelihood mse is a squared error, not a density" in capsys.readouterr().err
