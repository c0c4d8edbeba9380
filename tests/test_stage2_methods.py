"""SPEC Revision 2's stage-2 choices end to end: the KL objectives (`--kl`), the likelihoods
(`--likelihood`), the stage-2 initialisation (`--stage2-init`), the generation routing (`--routing`),
the presets (`--preset default|paper`), the ex-post reference, and the errors for bad combinations."""
import json
import math
import os

import numpy as np
import pytest
import torch

import xvae_fast as xf
from xvae_fast.config import LEGACY_VALUES, METHOD_CHOICES, TrainConfig, resolve
from xvae_fast.errors import CheckpointError, ConfigError
from xvae_fast.models import Autoencoder, ExPostModel, VAE, build_likelihood, build_models, get_ops
from xvae_fast.models.likelihood import Bernoulli, LearnedGaussian, SquaredError
from xvae_fast.ops.plans import Plan
from xvae_fast.training import load_reference, load_run

from train_utils import TINY_CLUSTERS, TINY_DIGITS, cli, load_ck, one_thread, train


def summary(run):
    with open(os.path.join(run, "summary.json")) as f:
        return json.load(f)


def _prior(K, C=None, seed=0, spread=1.0):
    g = torch.Generator().manual_seed(seed)
    C = K if C is None else C
    w = torch.rand(C, generator=g) + 0.3
    return xf.MixturePrior(w / w.sum(), torch.randn(C, K, generator=g) * spread,
                           torch.rand(C, K, generator=g) * 0.5 + 0.3)


# -- configuration ------------------------------------------------------------------------------------

def test_presets_fill_the_method_choices_and_flags_win():
    d = resolve(TrainConfig(dataset="digits"))
    assert (d.preset, d.plan, d.kl, d.stage2_init, d.routing, d.likelihood) == (
        "default", "matched", "tight", "ae", "per-row", "bernoulli")
    p = resolve(TrainConfig(dataset="digits", preset="paper"))
    assert {k: getattr(p, k) for k in METHOD_CHOICES["paper"]} == METHOD_CHOICES["paper"]
    assert (p.plan, p.kl, p.stage2_init, p.routing, p.likelihood) == (
        "full", "paper", "random", "per-coordinate", "mse")
    mixed = resolve(TrainConfig(dataset="digits", preset="paper", kl="tight", likelihood="gaussian"))
    assert (mixed.kl, mixed.likelihood, mixed.stage2_init) == ("tight", "gaussian", "random")
    assert resolve(TrainConfig(dataset="clusters")).likelihood == "gaussian"


def test_options_a_model_does_not_use_are_refused_or_recorded_as_none():
    with pytest.raises(ConfigError, match="--kl is an option of --model xvae; --model vae does not use it"):
        resolve(TrainConfig(dataset="digits", model="vae", kl="mixture"))
    v = resolve(TrainConfig(dataset="digits", model="vae"))
    assert set(v.model_options.to_dict()) == {"kl_weight"} and v.likelihood == "bernoulli"
    s = resolve(TrainConfig(dataset="digits", plan="single"))
    assert s.kl is None and s.routing is None and s.stage2_init == "ae"
    with pytest.raises(ConfigError, match="--routing applies to the mixture plans"):
        resolve(TrainConfig(dataset="digits", plan="single", routing="per-row"))


@pytest.mark.parametrize("changes,match", [
    (dict(kl="eq18"), "--kl must be one of"),
    (dict(stage2_init="warm"), "--stage2-init must be one of"),
    (dict(routing="per-column"), "--routing must be one of"),
    (dict(likelihood="poisson"), "--likelihood must be one of"),
    (dict(preset="best"), "--preset must be one of"),
    (dict(gamma_min=-1.0), "--gamma-min must be a finite number >= 0"),
    (dict(gamma_min=1e-3, likelihood="bernoulli"), "--gamma-min floors the learned variance"),
])
def test_bad_method_options_are_config_errors(changes, match):
    with pytest.raises(ConfigError, match=match):
        resolve(TrainConfig(dataset="digits", **changes))


def test_bernoulli_on_data_outside_0_1_is_a_clear_error(tmp_path):
    r = cli("xvae_fast.train", *TINY_CLUSTERS, "--likelihood", "bernoulli", "--out", tmp_path / "run")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "--likelihood bernoulli needs data in [0, 1]" in r.stderr and "clusters" in r.stderr


def test_cli_rejects_an_unknown_choice(tmp_path):
    r = cli("xvae_fast.train", "--kl", "eq18", "--out", tmp_path / "run")
    assert r.returncode == 2 and "--kl" in r.stderr and "Traceback" not in r.stderr


def test_legacy_checkpoint_configs_read_as_the_paper_setup():
    old = TrainConfig(dataset="clusters", plan="full").flat()      # the flat form of older versions
    for k in LEGACY_VALUES:
        old.pop(k, None)
    cfg = TrainConfig.from_saved(old)
    assert (cfg.kl, cfg.stage2_init, cfg.routing, cfg.likelihood, cfg.preset) == (
        "paper", "random", "per-coordinate", "mse", "paper")
    assert resolve(cfg).plan == "full"


# -- likelihoods --------------------------------------------------------------------------------------

def test_likelihoods_compute_their_negative_log_likelihoods():
    torch.manual_seed(0)
    h = torch.randn(5, 1, 4, 4, dtype=torch.float64)
    x = torch.rand(5, 1, 4, 4, dtype=torch.float64)
    mse = SquaredError("image")
    assert torch.allclose(mse.nll_rows(h, x), ((torch.sigmoid(h) - x) ** 2).flatten(1).sum(1))
    assert torch.allclose(SquaredError("vector").mean(h), h)
    b = Bernoulli("vector")
    p = torch.sigmoid(h)
    manual = -(x * torch.log(p) + (1 - x) * torch.log1p(-p)).flatten(1).sum(1)
    assert torch.allclose(b.nll_rows(h, x), manual)
    assert torch.allclose(b.mean(h), p)
    g = LearnedGaussian("vector")
    with torch.no_grad():
        g.log_gamma_std.fill_(-0.7)
    normal = torch.distributions.Normal(h, math.exp(-0.7))
    assert torch.allclose(g.nll_rows(h, x), -normal.log_prob(x).flatten(1).sum(1))


def test_learned_variance_reaches_its_closed_form_optimum():
    """For a fixed decoder output, the optimal gamma is the mean squared error per entry (SPEC-related
    4.5); optimising log g alone must reach it."""
    torch.manual_seed(1)
    x, f = torch.randn(64, 20), torch.randn(64, 20) * 0.3
    g = LearnedGaussian("vector")
    opt = torch.optim.Adam(g.parameters(), lr=0.05)
    for _ in range(2000):
        opt.zero_grad()
        g.nll(f, x).backward()
        opt.step()
    assert g.gamma == pytest.approx(float(((x - f) ** 2).mean()), rel=1e-4)
    floored = LearnedGaussian("vector", gamma_min=10.0)
    assert floored.gamma == pytest.approx(10.0) and floored.floor_binds()


# -- the KL objectives ----------------------------------------------------------------------------------

@pytest.mark.parametrize("kl", ["paper", "tight", "mixture"])
def test_each_kl_objective_trains_end_to_end(tmp_path, kl):
    run = str(tmp_path / kl)
    assert train(*TINY_CLUSTERS, "--kl", kl, "--plan", "full", "--no-outputs", "--out", run) == 0
    s = summary(run)
    assert s["kl_objective"] == kl and load_ck(run)["config"]["model_options"]["kl"] == kl
    te = s["test"]
    assert all(math.isfinite(te[k]) for k in ("loss", "recon", "kl", "kl_cat", "kl_gauss"))
    assert te["kl"] == pytest.approx(te["kl_cat"] + te["kl_gauss"], rel=1e-5, abs=1e-6)
    assert te["loss"] == pytest.approx(te["recon"] + te["kl"], rel=1e-6)
    _, vae = build_models(resolve(TrainConfig(dataset="clusters", kl=kl, plan="full")),
                          load_run(run)[1])
    assert (vae.logits_head is None) == (kl == "tight")   # tight needs no logits head


def test_tight_kl_is_the_vae_loss_and_below_the_mixture_bound():
    """The model's KL terms are the ops' bounds; the tight bound is the smallest Lemma 1 bound."""
    torch.manual_seed(0)
    prior = _prior(4)
    ops = get_ops()
    vt = VAE("vector", (6,), 4, "mixture", Plan.preset("matched", 4), (8,), ops, kl="tight")
    vm = VAE("vector", (6,), 4, "mixture", Plan.preset("matched", 4), (8,), ops, kl="mixture")
    vt.set_prior(prior)
    vm.set_prior(prior)
    vm.load_state_dict({**vt.state_dict(), **{k: v for k, v in vm.state_dict().items() if "logits" in k}})
    x = torch.randn(32, 6)
    lt, mt, vt_ = vt.encode(x)
    lm, mm, vm_ = vm.encode(x)
    tight = vt.kl_terms(lt, mt, vt_)
    mix = vm.kl_terms(lm, mm, vm_)
    ref_t = xf.reference.mixture_bound(mt, vt_, prior, "tight")
    for a, b in zip(tight[:3], ref_t):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert float(tight[0].detach()) <= float(mix[0].detach()) + 1e-6


@pytest.mark.parametrize("plan", ["interleaved", "k1-pq-np", "k1-pq-nq"])
def test_tight_kl_routes_pi_q_plans_by_the_optimal_weights(plan):
    """Under `tight` there is no logits head: plans that route by pi_q use the batch mean of r*."""
    torch.manual_seed(0)
    prior = _prior(4, spread=3.0)
    vae = VAE("vector", (6,), 4, "mixture", Plan.preset(plan, 4), (8,), get_ops(), kl="tight")
    vae.set_prior(prior)
    x = torch.randn(64, 6)
    logits, mu, logvar = vae.encode(x)
    assert logits is None
    *_, pi_q = vae.kl_terms(logits, mu, logvar)
    r = xf.reference.mixture_bound(mu, logvar, prior, "tight", return_weights=True)[3]
    torch.testing.assert_close(pi_q, r.mean(0))
    assert abs(float(pi_q.sum()) - 1) < 1e-5 and not pi_q.requires_grad
    # the routing follows the posterior: shifting every mean next to component 0 moves pi_q there
    with torch.no_grad():
        vae.mu_head.weight.zero_()
        vae.mu_head.bias.copy_(prior.means[0])
        vae.logvar_head.weight.zero_()
        vae.logvar_head.bias.copy_(torch.log(prior.stds[0] ** 2))
    *_, pi_0 = vae.kl_terms(*vae.encode(x))
    assert float(pi_0[0]) > 0.9
    loss = vae.loss(x)["loss"]
    assert torch.isfinite(loss)


# -- stage-2 initialisation ----------------------------------------------------------------------------

@pytest.mark.parametrize("kind,shape,hidden", [("vector", (5,), (16, 8)), ("image", (1, 8, 8), (8,)),
                                               ("image", (1, 28, 28), (8,)), ("image", (3, 64, 64), (8,))])
@pytest.mark.parametrize("likelihood", ["mse", "gaussian"])
def test_stage2_init_copies_the_autoencoder(kind, shape, hidden, likelihood):
    """Every architecture: the initialised VAE's mean path is the autoencoder (same latent means, same
    decoded means), its log-variances start at the prior's mean within-component variance."""
    torch.manual_seed(0)
    K = 4
    ae = Autoencoder(kind, shape, K, hidden, likelihood=build_likelihood(likelihood, kind))
    with torch.no_grad():
        for p in ae.likelihood.parameters():
            p.fill_(-1.3)
    vae = VAE(kind, shape, K, "mixture", Plan.preset("matched", K), hidden, get_ops(), kl="tight",
              likelihood=build_likelihood(likelihood, kind))
    prior = _prior(K)
    vae.set_prior(prior)
    x = torch.rand(3, *shape)
    _, mu_before, _ = vae.encode(x)
    assert not torch.allclose(mu_before, ae.encode(x))
    vae.init_from_autoencoder(ae)
    _, mu, logvar = vae.encode(x)
    torch.testing.assert_close(mu, ae.encode(x))
    z = torch.randn(3, K)
    torch.testing.assert_close(vae.decode(z), ae.decode(z))
    expected = torch.log((prior.weights[:, None] * prior.stds ** 2).sum(0))
    torch.testing.assert_close(logvar, expected.expand(3, K))
    torch.testing.assert_close(vae.likelihood.nll(vae.decoder(z), x.clamp(0, 1)),
                               ae.likelihood.nll(ae.decoder(z), x.clamp(0, 1)))


def test_trainer_initialises_stage2_from_stage1_with_stage1_from(tmp_path):
    """With --epochs-vae 0 the trained VAE is the initialised one: its mean path equals the stage-1
    autoencoder's, also when stage 1 comes from another run (--stage1-from); --stage2-init random
    does not."""
    src = str(tmp_path / "src")
    assert train(*TINY_DIGITS, "--no-outputs", "--out", src) == 0
    runs = {}
    for init in ("ae", "random"):
        run = str(tmp_path / init)
        assert train(*TINY_DIGITS, "--no-outputs", "--epochs-vae", "0", "--stage1-from", src,
                     "--stage2-init", init, "--out", run) == 0
        runs[init] = run
    cfg, info, _, _ = load_run(runs["ae"])
    ae, _ = build_models(cfg, info)
    ae.load_state_dict(load_ck(src)["models"]["ae"])
    x = torch.rand(4, 1, 8, 8)
    for init, run in runs.items():
        _, _, vae, _ = load_run(run)
        same = torch.allclose(vae.encode(x)[1], ae.encode(x), atol=1e-6)
        assert same == (init == "ae"), init


# -- generation routing ---------------------------------------------------------------------------------

def _identity_decoder_vae(prior, routing):
    """A vector VAE whose decoder is the identity on positive codes (ReLU MLP with identity weights)."""
    K = prior.latent_dim
    vae = VAE("vector", (K,), K, "mixture", Plan.preset("matched", K), (K,), get_ops(), kl="tight",
              routing=routing)
    with torch.no_grad():
        for m in vae.decoder.net:
            if isinstance(m, torch.nn.Linear):
                m.weight.copy_(torch.eye(K))
                m.bias.zero_()
    vae.set_prior(prior)
    return vae


def test_per_row_generation_draws_the_fitted_mixture():
    """Per-row routing samples the mixture itself: one component per sample (all coordinates from it),
    component frequencies as the weights (chi-squared), and the mixture's mean and covariance,
    including the cross-coordinate covariance that per-coordinate routing cannot produce."""
    from scipy import stats
    K, n = 3, 60000
    w = torch.tensor([0.5, 0.3, 0.2])
    M = torch.tensor([[10.0, 10.0, 10.0], [20.0, 14.0, 30.0], [30.0, 20.0, 12.0]])
    S = torch.full((K, K), 0.5)
    prior = xf.MixturePrior(w, M, S)
    vae = _identity_decoder_vae(prior, "per-row")
    g = torch.Generator().manual_seed(0)
    x = vae.generate(n, generator=g).double()
    comp = torch.cdist(x, M.double()).argmin(1)
    assert (torch.cdist(x, M.double()).min(1).values < 4).all()   # every sample near one component
    counts = torch.bincount(comp, minlength=K).double()
    chi2 = float(((counts - n * w.double()) ** 2 / (n * w.double())).sum())
    assert stats.chi2.sf(chi2, K - 1) > 1e-3
    mean = (w[:, None].double() * M.double()).sum(0)
    cov = (torch.diag_embed(S.double() ** 2) * w.double()[:, None, None]).sum(0) + \
        (w.double()[:, None, None] * (M.double() - mean)[:, :, None] * (M.double() - mean)[:, None, :]).sum(0)
    torch.testing.assert_close(x.mean(0), mean, atol=0.1, rtol=0)
    torch.testing.assert_close(torch.cov(x.T), cov, atol=0.6, rtol=0.02)
    per_coord = _identity_decoder_vae(prior, "per-coordinate").generate(n, generator=g).double()
    off = torch.cov(per_coord.T) - torch.diag(torch.diag(torch.cov(per_coord.T)))
    assert off.abs().max() < 1.5 and cov[0, 1] > 10   # per-coordinate loses the correlation
    assert float(torch.cdist(per_coord, M.double()).min(1).values.max()) > 4


def test_runs_sample_with_their_routing(tmp_path):
    run = str(tmp_path / "run")
    assert train(*TINY_CLUSTERS, "--routing", "per-coordinate", "--out", run) == 0
    s = summary(run)
    assert s["routing"] == "per-coordinate" and s["clusters"]["routing"] == "per-coordinate"
    assert set(s["clusters"]["within_3std_samples"]) == {"per-coordinate", "per-row", "expost"}
    for name in ("samples.png", "samples_per_row.png", "samples_expost.png"):
        assert os.path.isfile(os.path.join(run, name)), name
    _, _, vae, _ = load_run(run)
    assert vae.routing == "per-coordinate"
    g1, g2 = (torch.Generator().manual_seed(3) for _ in range(2))
    torch.testing.assert_close(vae.generate(50, generator=g1),
                               vae.generate(50, routing="per-coordinate", generator=g2))


# -- the ex-post reference -------------------------------------------------------------------------------

def test_expost_reference_decodes_prior_samples_with_the_stage1_decoder(tmp_path):
    run = str(tmp_path / "run")
    assert train(*TINY_CLUSTERS, "--no-outputs", "--out", run) == 0
    cfg, info, ex, ck = load_reference(run, "expost")
    assert isinstance(ex, ExPostModel) and ex.routing == "per-row"
    prior = xf.MixturePrior(ck["prior"]["weights"], ck["prior"]["means"], ck["prior"]["stds"])
    z = xf.sample_prior(prior, 20, 1.0, "per-row", generator=torch.Generator().manual_seed(5))
    x = ex.generate(20, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(x, ex.ae.decode(z))
    xin = torch.randn(7, 2)
    torch.testing.assert_close(ex(xin)["xhat"], ex.ae(xin)[0])
    vae_run = str(tmp_path / "vae")
    assert train(*TINY_CLUSTERS, "--model", "vae", "--no-outputs", "--out", vae_run) == 0
    with pytest.raises(CheckpointError, match="\\(vae, at stage 'done'\\) has no 'expost' reference sampler; "
                                              "it has none"):
        load_reference(vae_run, "expost")


def test_evaluate_reports_the_expost_row(tmp_path):
    run = str(tmp_path / "run")
    assert train(*TINY_CLUSTERS, "--no-outputs", "--out", run) == 0
    r = cli("xvae_fast.evaluate", "--run", run, "--alpha", "none", "--n-fake", "200", "--no-figures",
            "--classifier-steps", "30", "--no-progress", "--quiet", "--cache-dir", tmp_path / "cache")
    assert r.returncode == 0, r.stderr
    assert "ex-post reference" in r.stdout and "in modes" in r.stdout
    with open(os.path.join(run, "eval_expost.json")) as f:
        ex = json.load(f)
    with open(os.path.join(run, "eval.json")) as f:
        main = json.load(f)
    assert ex["evaluated"] == "expost" and main["evaluated"] == "vae"
    assert main["protocol"]["routing"] == "per-row"    # the run's --routing
    m = ex["metrics"]["modes"]
    assert 0 <= m["within_3std"] <= 1 and len(m["shares"]) == 3
    assert sum(m["counts"]) <= m["n"] == 200


# -- resume under the new options -------------------------------------------------------------------------

@pytest.mark.parametrize("extra,stop", [
    (["--kl", "mixture", "--plan", "k1-pq-nq", "--likelihood", "mse"], 13),
    (["--kl", "tight", "--plan", "interleaved", "--stage2-init", "random"], 10),
    (["--preset", "paper"], 12),
    (["--likelihood", "gaussian", "--gamma-min", "1e-3"], 17),
])
def test_resume_is_exact_under_the_new_options(tmp_path, extra, stop):
    from test_train_resume import _assert_same_run
    ref = str(tmp_path / "ref")
    assert train(*TINY_CLUSTERS, *extra, "--no-outputs", "--out", ref) == 0
    run = str(tmp_path / "run")
    assert train(*TINY_CLUSTERS, *extra, "--no-outputs", "--out", run, "--stop-after", stop) == 0
    assert load_ck(run)["stage"] != "done"
    assert train("--resume", run, "--no-progress") == 0
    _assert_same_run(load_ck(ref), load_ck(run))


def test_gaussian_likelihood_logs_gamma_per_epoch(tmp_path):
    run = str(tmp_path / "run")
    assert train(*TINY_CLUSTERS, "--likelihood", "gaussian", "--no-outputs", "--out", run) == 0
    with open(os.path.join(run, "metrics.json")) as f:
        hist = json.load(f)
    assert all(r["gamma"] > 0 and r["gamma_floor_binds"] in (0.0, 1.0) for r in hist)
    s = summary(run)
    assert s["likelihood"] == "gaussian" and "nats" in s["objective_units"]
    assert s["likelihood_gamma"] == pytest.approx(hist[-1]["gamma"])
    with open(os.path.join(run, "metrics.csv")) as f:
        assert "gamma" in f.readline()


@pytest.mark.parametrize("likelihood", ["mse", "bernoulli", "gaussian"])
def test_each_likelihood_trains_digits_and_the_baseline(tmp_path, likelihood):
    for model in ("xvae", "vae"):
        run = str(tmp_path / model)
        assert train(*TINY_DIGITS, "--model", model, "--likelihood", likelihood, "--no-outputs",
                     "--out", run) == 0
        s = summary(run)
        assert s["likelihood"] == likelihood and math.isfinite(s["test"]["loss"])
        units = s["objective_units"]
        assert ("squared error" in units) == (likelihood == "mse") and ("nats" in units) != (likelihood == "mse")


def test_decoder_noise_draws_from_the_likelihood(tmp_path):
    """--decoder-noise adds the likelihood's noise: for the learned Gaussian, the difference to the
    decoded means has the std sqrt(gamma)."""
    from xvae_fast.sample import sample_run
    run = str(tmp_path / "run")
    assert train(*TINY_CLUSTERS, "--no-outputs", "--out", run) == 0
    gamma = summary(run)["likelihood_gamma"]
    with one_thread():
        mean, _ = sample_run(run, 4000, seed=3)
        noisy, _ = sample_run(run, 4000, seed=3, decoder_noise=True)
    assert float((noisy - mean).std()) == pytest.approx(math.sqrt(gamma), rel=0.05)
    r = cli("xvae_fast.sample", "--run", run, "--n", "10", "--decoder-noise", "--out", tmp_path / "s.npy")
    assert r.returncode == 0 and np.load(tmp_path / "s.npy").shape == (10, 2)
    b = Bernoulli("image")
    draws = b.draw(torch.full((2000, 1, 2, 2), 0.3), generator=torch.Generator().manual_seed(0))
    assert set(draws.unique().tolist()) <= {0.0, 1.0} and abs(float(draws.mean()) - 0.3) < 0.02


def test_compare_inception_weights_need_evaluate(tmp_path):
    r = cli("xvae_fast.compare", "--data", "clusters", "--quick", "--inception-weights", "w.pth",
            "--out", tmp_path / "c")
    assert r.returncode == 2 and "--inception-weights is for --evaluate" in r.stderr


def test_stage1_from_a_run_with_another_likelihood_is_refused(tmp_path):
    src = str(tmp_path / "src")
    assert train(*TINY_CLUSTERS, "--likelihood", "mse", "--no-outputs", "--out", src) == 0
    r = cli("xvae_fast.train", *TINY_CLUSTERS, "--stage1-from", src, "--out", tmp_path / "run")
    assert r.returncode == 2 and "trained with --likelihood mse" in r.stderr and "Traceback" not in r.stderr
