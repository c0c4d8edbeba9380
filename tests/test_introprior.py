"""S-IntroVAE with a learned prior (`--model introprior`, paper 001): the laws of SPEC-related 1.5 (soft
clip, entropy, MC KL, Vamp-to-mixture conversion, gradient routing by autograd), the stages, the three
optimizers and schedulers, exact resume across every stage boundary, and bad input."""
from __future__ import annotations

import math

import pytest
import torch

from xvae_fast.config import TrainConfig, resolve
from xvae_fast.errors import ConfigError
from xvae_fast.models.introprior import (IntroPriorVAE, clip_range_kept, normalised_entropy, soft_clip)
from xvae_fast.training import train
from xvae_fast.training import checkpoint as ckpt

from train_utils import cli, one_thread

QUICK = dict(limit=200, batch_size=50, progress=False, outputs=False, eval_every=0, threads=1,
             model="introprior")


def _cfg(tmp_path, name, **kw):
    base = dict(QUICK, out=str(tmp_path / name))
    base.update(kw)
    return TrainConfig(**base)


def _model(prior="ip", weights="learned", C=4, latent=3, kind="vector", shape=(5,), **kw):
    torch.manual_seed(0)
    return IntroPriorVAE(kind, shape, latent, hidden=(16, 16), prior=prior, weights=weights, components=C,
                         mc=kw.pop("mc", 8), **kw)


# -- the adaptive soft clip (SPEC 1.5) --------------------------------------------------------------------
@pytest.mark.parametrize("lo, hi", [(-3.0, 1.0), (0.5, 0.7), (-40.0, 25.0)])
def test_soft_clip_keeps_086138_of_any_range_at_k10(lo, hi):
    a, b = torch.tensor([lo], dtype=torch.float64), torch.tensor([hi], dtype=torch.float64)
    kept = (soft_clip(b, a, b, 10.0) - soft_clip(a, a, b, 10.0)) / (b - a)
    assert clip_range_kept(10.0) == pytest.approx(0.86138, abs=5e-6)
    # the 1e-8 in beta's denominator moves the value by < 1e-7 for these ranges
    assert float(kept) == pytest.approx(clip_range_kept(10.0), abs=1e-6)


def test_soft_clip_is_monotone_bounded_and_identity_like_mid_range():
    a, b = torch.tensor([-2.0], dtype=torch.float64), torch.tensor([1.0], dtype=torch.float64)
    v = torch.linspace(-50, 50, 20001, dtype=torch.float64).unsqueeze(1)
    f = soft_clip(v, a, b, 10.0)
    # monotone, up to the rounding of v + (a - v) where it saturates far outside the range
    assert (f[1:] - f[:-1] >= -1e-12).all()
    inner = (v[1:, 0] > -8) & (v[1:, 0] < 7)
    assert (f[1:] - f[:-1] > 0)[inner].all()                 # strictly so around the range
    assert float(f.min()) > -2.0 - 1e-9 and float(f.max()) < 1.0 + 1e-9
    assert float(f[0]) == pytest.approx(-2.0, abs=1e-6) and float(f[-1]) == pytest.approx(1.0, abs=1e-6)
    mid = torch.tensor([[-0.5]], dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(soft_clip(mid, a, b, 10.0).sum(), mid)
    # identity-like in the middle: slope 1 - 2 sigmoid(-K/2) = 0.98661 at the midpoint
    assert float(g) == pytest.approx(1 - 2 / (1 + math.exp(5.0)), abs=1e-9)


def test_soft_clip_with_equal_bounds_returns_the_bound():
    a = torch.tensor([0.3, -1.0])
    b = torch.tensor([0.3, 2.0])
    out = soft_clip(torch.tensor([[5.0, 0.5], [-7.0, 0.5]]), a, b, 10.0)
    assert torch.equal(out[:, 0], torch.tensor([0.3, 0.3]))
    assert torch.isfinite(out).all()


def test_normalised_entropy_uniform_one_and_one_hot_zero():
    assert float(normalised_entropy(torch.full((7,), 1 / 7))) == pytest.approx(1.0, abs=1e-6)
    assert float(normalised_entropy(torch.tensor([0.0, 1.0, 0.0]))) == pytest.approx(0.0, abs=1e-12)


# -- the Monte Carlo KL (SPEC 1.5) -----------------------------------------------------------------------
def test_mc_kl_against_one_standard_normal_matches_the_closed_form():
    m = _model(prior="sg", latent=4, mc=100)
    g = torch.Generator().manual_seed(3)
    mu = torch.randn(64, 4, generator=g)
    logvar = torch.randn(64, 4, generator=g) * 0.5
    torch.manual_seed(11)
    reps = torch.stack([m.mc_kl(mu, logvar) for _ in range(20)])     # (20, 64): 20 estimates each
    closed = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1)
    est = reps.mean(0)
    se = reps.std(0) / math.sqrt(20)
    # each row's T = 100 estimate is unbiased: every row within 3 standard errors (and 4 for safety of
    # the 64 simultaneous checks would be looser; 3 holds for this seed, and the mean error is tiny)
    assert ((est - closed).abs() <= 3 * se + 1e-6).float().mean() >= 0.95
    assert float((est - closed).mean().abs()) < 3 * float(se.mean()) / math.sqrt(64) + 1e-4


# -- VampPrior -> mixture (SPEC 1.5, 1.6) -----------------------------------------------------------------
def _with_learned_weights(m):
    with torch.no_grad():
        m.vamp_logits.copy_(torch.tensor([2.0, -1.0, 0.5, -3.0]))
        m.pseudo.normal_()
    return m


def test_vamp_to_mixture_preserves_the_prior_exactly():
    m = _with_learned_weights(_model()).eval()
    z = torch.randn(300, 3)
    with torch.no_grad():
        before = m.log_prior(z)
    report = m.vamp_to_mog()
    with torch.no_grad():
        after = m.log_prior(z)
    assert m.is_mixture_phase
    torch.testing.assert_close(after, before, rtol=0, atol=1e-5)
    assert report["max_abs_log_prob_change"] < 1e-5


def test_code_parity_reproduces_the_weight_logit_bug():
    m = _with_learned_weights(_model(code_parity=True)).eval()
    z = torch.randn(300, 3)
    w_vamp = torch.softmax(m.vamp_logits.detach(), 0)
    with torch.no_grad():
        before = m.log_prior(z)
    m.vamp_to_mog()
    # the softmaxed weights became the logits: the mixture's weights are softmax(w), near uniform
    torch.testing.assert_close(torch.softmax(m.mog_logits.detach(), 0), torch.softmax(w_vamp, 0))
    with torch.no_grad():
        assert float((m.log_prior(z) - before).abs().max()) > 0.1


def test_uniform_weights_stay_uniform_through_the_conversion():
    m = _model(weights="uniform").eval()
    m.vamp_to_mog()
    assert not isinstance(m.mog_logits, torch.nn.Parameter)
    torch.testing.assert_close(torch.log_softmax(m.mog_logits, 0), torch.full((4,), -math.log(4)))


# -- gradient routing (SPEC 1.5) ----------------------------------------------------------------------------
def _game_ready(prior="ip", **kw):
    m = _with_learned_weights(_model(prior=prior, **kw)) if prior != "sg" else _model(prior="sg", **kw)
    if prior != "sg":
        m.vamp_to_mog()
        m.freeze_clip_range()
    return m.train()


def _grads(params):
    return [p.grad for p in params]


@pytest.mark.parametrize("prior", ["ip", "fixed", "sg"])
def test_encoder_update_reaches_the_encoder_only(prior):
    m = _game_ready(prior)
    x = torch.randn(16, 5)
    updates = m.game_updates(x, train_prior=prior == "ip")
    upd = next(updates)
    assert upd.optimizers == ("encoder",)
    upd.loss.backward()
    assert all(g is not None and torch.isfinite(g).all() for g in _grads(m.encoder_parameters()))
    assert any(float(g.abs().sum()) > 0 for g in _grads(m.encoder_parameters()))
    assert all(g is None for g in _grads(m.decoder_parameters()))
    assert all(p.grad is None for ph in (0, 1) for p in m.prior_parameters(ph))
    updates.close()
    assert all(p.requires_grad for p in m.parameters())       # flags restored


def test_decoder_update_routes_the_prior_gradient_through_the_real_kl_and_z_s_only():
    m = _game_ready("ip")
    x = torch.randn(16, 5)
    _, (z, mu, logvar) = m.game_encoder_step(x)
    params = m.prior_parameters()
    with m.trainable(m.decoder_parameters() + params):
        rec = {}
        terms = m.game_decoder_step(x, z, mu, logvar, record=rec)
        z_s = rec["z_s"]
        # the reconstructed fakes' KL never reaches the prior (target detached, x_r = D(z.detach()))
        gs = torch.autograd.grad(terms["kl_rec"], params, allow_unused=True, retain_graph=True)
        assert all(g is None or float(g.abs().max()) == 0 for g in gs)
        # the fakes' KL reaches the means only through z_s: d/dm_i = sum over the draws of component i
        # of d kl_fake / d z_s (the target path contributes nothing)
        g_m, = torch.autograd.grad(terms["kl_fake"], [m.prior_means], retain_graph=True)
        g_zs, = torch.autograd.grad(terms["kl_fake"], [z_s], retain_graph=True)
        via_zs = torch.zeros_like(m.prior_means).index_add_(0, rec["index"], g_zs)
        torch.testing.assert_close(g_m, via_zs, rtol=1e-5, atol=1e-7)
        assert float(g_m.abs().max()) > 0
        # the real KL (prior as a target) reaches the means, the log-variances and the weight logits
        gs = torch.autograd.grad(rec["kl_real"], params, retain_graph=True)
        assert all(float(g.abs().max()) > 0 for g in gs)


def test_decoder_update_reaches_the_decoder_and_prior_never_the_encoder():
    m = _game_ready("ip")
    x = torch.randn(16, 5)
    updates = m.game_updates(x, train_prior=True)
    next(updates)                              # the encoder update, not applied
    upd = next(updates)
    assert upd.optimizers == ("decoder", "prior")
    upd.loss.backward()
    assert all(p.grad is None for p in m.encoder_parameters())
    assert all(g is not None and float(g.abs().sum()) > 0 for g in _grads(m.decoder_parameters()))
    assert all(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in m.prior_parameters())
    updates.close()


def test_fixed_prior_gets_no_gradient_in_the_game():
    m = _game_ready("fixed")
    x = torch.randn(16, 5)
    seen = []
    for upd in m.game_updates(x, train_prior=False):
        seen.append(upd.optimizers)
        upd.loss.backward()
    assert seen == [("encoder",), ("decoder",)]
    assert all(p.grad is None for p in m.prior_parameters())


def test_entropy_term_reaches_the_encoder_only():
    m = _game_ready("ip", entropy=10.0)
    m0 = _game_ready("ip", entropy=0.0)
    m0.load_state_dict(m.state_dict())
    x = torch.randn(16, 5)
    torch.manual_seed(5)
    with m.trainable(m.encoder_parameters()):
        t1, _ = m.game_encoder_step(x)
        g1 = torch.autograd.grad(t1["loss_e"], m.encoder_parameters())
    torch.manual_seed(5)
    with m0.trainable(m0.encoder_parameters()):
        t0, _ = m0.game_encoder_step(x)
        g0 = torch.autograd.grad(t0["loss_e"], m0.encoder_parameters())
    # same draws: the losses differ by exactly s r_ent sum c log(c + 1e-8) / log M, and so do gradients
    diff = float((t1["loss_e"] - t0["loss_e"]).detach())
    assert diff == pytest.approx(-m.scale * 10.0 * float(t1["resp_entropy"]), rel=1e-4)
    assert any(float((a - b).abs().max()) > 0 for a, b in zip(g1, g0))
    assert 0.0 < float(t1["resp_entropy"]) <= 1.0


# -- training through the shared trainer -----------------------------------------------------------------
def test_stages_and_three_optimizers(tmp_path):
    cfg = _cfg(tmp_path, "run", dataset="clusters", epochs_vae=2, introprior_mog_warmup=1, epochs_game=2)
    res = train(cfg, verbose=False)
    assert res.status == "done"
    ck = ckpt.load_checkpoint(res.run_dir)
    assert list(ck["optimizers"]) == ["warmup", "mog_warmup", "game"]
    assert set(ck["optimizers"]["game"]["optimizer_set"]) == {"encoder", "decoder", "prior"}
    assert set(ck["schedulers"]["game"]["scheduler_set"]) == {"encoder", "decoder", "prior"}
    stages = [r["stage"] for r in ck["history"]]
    assert stages == ["warmup", "mog_warmup", "game", "game"]
    sd = ck["models"]["vae"]
    # the clip range was frozen from the mixture at the start of the game, and stayed frozen
    assert int(sd["clip_on"]) == 1 and int(sd["phase"]) == 1
    assert set(ck["introprior_fits"]) == {"to_mog", "clip"}
    assert ck["introprior_fits"]["clip"]["clip_lo"] == sd["clip_lo"].tolist()
    assert ck["introprior_fits"]["to_mog"]["max_abs_log_prob_change"] < 1e-4


def test_fixed_variant_has_no_prior_optimizer_in_the_game_and_the_prior_stays(tmp_path):
    cfg = _cfg(tmp_path, "run", dataset="clusters", epochs_vae=1, introprior_mog_warmup=1, epochs_game=2,
               introprior_prior="fixed")
    res = train(cfg, verbose=False)
    ck = ckpt.load_checkpoint(res.run_dir)
    assert set(ck["optimizers"]["game"]["optimizer_set"]) == {"encoder", "decoder"}
    assert int(ck["models"]["vae"]["clip_on"]) == 0          # the clip belongs to ip


def test_milestones_decay_every_optimizer_across_stages(tmp_path):
    # 160 train rows at batch 50: 4 steps per epoch; warm-up 2 epochs (steps 0-7), game from step 8
    cfg = _cfg(tmp_path, "run", dataset="clusters", epochs_vae=2, introprior_mog_warmup=1, epochs_game=2,
               introprior_milestones=[3, 10], lr=1e-3, stop_after=11)
    train(cfg, verbose=False)
    ck = ckpt.load_checkpoint(str(tmp_path / "run"))
    lrs = {r["stage"]: r["lr"] for r in ck["history"]}
    assert lrs["warmup"] == pytest.approx(1e-4)              # decayed at step 3, inside the stage
    assert lrs["mog_warmup"] == pytest.approx(1e-4)          # a later stage starts decayed
    game = ck["optimizers"]["game"]["optimizer_set"]
    assert all(g["param_groups"][0]["lr"] == pytest.approx(1e-5) for g in game.values())   # step 10


@pytest.mark.parametrize("stop_at", [3, 4, 6, 9])
def test_resumes_exactly_across_every_stage_boundary(tmp_path, stop_at):
    from test_related_models import _resume_matches
    # steps: warmup 0-3 | to_mog | mog_warmup 4-7 | clip | game 8-11 (4 steps per epoch)
    ck_a, ck_b = _resume_matches(tmp_path, stop_at, model="introprior", dataset="clusters", epochs_vae=2,
                                 introprior_mog_warmup=1, epochs_game=1, introprior_mc=4)
    # the three optimizers' and schedulers' states resume too (the game's Adam moments included)
    for k in ("encoder", "decoder", "prior"):
        sa = ck_a["optimizers"]["game"]["optimizer_set"][k]["state"]
        sb = ck_b["optimizers"]["game"]["optimizer_set"][k]["state"]
        assert sa.keys() == sb.keys() and all(torch.equal(sa[i]["exp_avg"], sb[i]["exp_avg"]) for i in sa)


def test_digits_game_trains_finite_and_samples(tmp_path):
    cfg = _cfg(tmp_path, "digits", dataset="digits", epochs_vae=1, introprior_mog_warmup=1, epochs_game=1,
               outputs=True, introprior_mc=10)
    res = train(cfg, verbose=False)
    s = res.summary
    assert s["model"] == "introprior" and s["introprior"]["scale"] == pytest.approx(1 / 64)
    assert s["introprior"]["beta_neg"] == 32.0 and math.isfinite(s["test"]["loss"])
    assert (tmp_path / "digits" / "samples.png").exists()


def test_warmup_only_is_the_papers_vae_baseline(tmp_path):
    cfg = _cfg(tmp_path, "vae", dataset="clusters", epochs_vae=1, epochs_game=0, introprior_prior="sg",
               introprior_beta_rec=0.8, introprior_beta_kl=0.05)
    res = train(cfg, verbose=False)
    ck = ckpt.load_checkpoint(res.run_dir)
    assert [r["stage"] for r in ck["history"]] == ["warmup"]
    assert res.summary["model_name"].startswith("VAE (SG")


# -- configuration and bad input ----------------------------------------------------------------------------
def test_defaults_per_dataset():
    c = resolve(TrainConfig(model="introprior", dataset="8gaussians"))
    assert (c.introprior_beta_rec, c.introprior_beta_kl, c.introprior_beta_neg) == (0.2, 0.3, 0.9)
    assert c.introprior_components == 64 and c.latent == 2 and c.introprior_milestones == [10000, 15000]
    assert c.likelihood == "mse"
    code = resolve(TrainConfig(model="introprior", dataset="2spirals", introprior_preset="code"))
    assert (code.introprior_beta_rec, code.introprior_beta_kl, code.introprior_beta_neg) == (0.2, 0.5, 1.0)
    d = resolve(TrainConfig(model="introprior", dataset="digits"))
    assert d.introprior_beta_neg == 32.0 and d.introprior_beta_rec == 20.0 and d.introprior_components == 10
    assert d.introprior_milestones is None
    # the options of this model are cleared for the others
    with pytest.raises(ConfigError, match="--introprior-beta-neg is an option of --model introprior; "
                                          "--model vae does not use it"):
        resolve(TrainConfig(model="vae", introprior_beta_neg=5.0, epochs_game=3))


@pytest.mark.parametrize("kw, match", [
    (dict(introprior_prior="mog"), "--introprior-prior must be one of"),
    (dict(introprior_weights="lc"), "--introprior-weights must be one of"),
    (dict(introprior_components=0), "--introprior-components must be an integer >= 1"),
    (dict(introprior_mc=0), "--introprior-mc must be an integer >= 1"),
    (dict(introprior_beta_neg=-1.0), "--introprior-beta-neg must be a finite number >= 0"),
    (dict(introprior_alpha=0.0), "--introprior-alpha must be a finite number > 0"),
    (dict(introprior_milestones=[5, 2]), "--introprior-milestones must be increasing"),
    (dict(introprior_mog_warmup=9, epochs_vae=3), "--introprior-mog-warmup 9 is longer"),
    (dict(epochs_vae=0, epochs_game=0), "nothing to train"),
    (dict(lr_schedule="cosine"), "--lr-schedule must be none"),
    (dict(likelihood="bernoulli"), "uses --likelihood mse"),
])
def test_bad_options_are_refused_with_the_option_named(kw, match):
    with pytest.raises(ConfigError, match=match):
        resolve(TrainConfig(model="introprior", dataset="digits", **kw))


def test_cli_bad_flag_exits_2_without_traceback(tmp_path):
    r = cli("xvae_fast.train", "--model", "introprior", "--introprior-beta-neg", "-3", "--out", tmp_path / "x")
    assert r.returncode == 2
    assert "--introprior-beta-neg" in r.stderr and "Traceback" not in r.stderr


def test_evaluate_and_sample_an_introprior_run(tmp_path):
    import json
    import os

    from xvae_fast.evaluate import main as evaluate_main
    from xvae_fast.sample import main as sample_main
    res = train(_cfg(tmp_path, "ip", dataset="digits", epochs_vae=1, introprior_mog_warmup=1, epochs_game=1,
                     introprior_mc=4), verbose=False)
    rc = evaluate_main(["--run", res.run_dir, "--metrics", "rec,fd", "--n-fake", "100", "--n-real", "100",
                        "--classifier-steps", "30", "--alpha", "1", "--no-figures", "--quiet", "--threads", "1"])
    assert rc == 0
    report = json.load(open(os.path.join(res.run_dir, "eval.json")))
    assert report["model"] == "introprior"
    assert report["metrics"]["fd_lenet"]["samples"]["value"] > 0
    out = tmp_path / "s.npy"
    assert sample_main(["--run", res.run_dir, "--n", "10", "--out", str(out)]) == 0
    import numpy as np
    arr = np.load(out)
    assert arr.shape == (10, 1, 8, 8) and np.isfinite(arr).all() and arr.min() >= 0 and arr.max() <= 1


def test_toy2d_runner_schedules_the_warmup_and_the_game(tmp_path):
    from xvae_fast.experiments.toy2d import MODELS, schedule_flags
    from xvae_fast.train import parse_config
    def asked(key, batch):
        return resolve(parse_config(["--dataset", "8gaussians", "--batch-size", str(batch)] + MODELS[key][1])[0])
    # 160 steps of 128 per epoch: the warm-up is capped at the paper's 2,000 steps (13 epochs)
    assert schedule_flags("introprior", 25, asked("mog-ip-lc", 128)) == ["--epochs-vae", "13", "--epochs-game", "25"]
    assert schedule_flags("introprior", 5, asked("mog-ip-lc", 128)) == ["--epochs-vae", "5", "--epochs-game", "5"]
    # --full: the paper's 2,000 warm-up steps and 28,000 game steps at 40 steps of 512 per epoch
    assert schedule_flags("introprior", 750, asked("mog-ip-lc", 512)) == ["--epochs-vae", "50", "--epochs-game", "700"]
    # the paper's VAE column gets the same total steps as the game variants
    assert schedule_flags("introprior", 750, asked("vae-sg", 512)) == ["--epochs-vae", "750"]
    assert schedule_flags("introprior", 25, asked("vae-sg", 128)) == ["--epochs-vae", "38"]
    from xvae_fast.experiments.toy2d import main
    import json
    with one_thread():
        rc = main(["--models", "sintro-sg,vae-sg", "--seeds", "1", "--datasets", "8gaussians", "--out",
                   str(tmp_path / "t"), "--steps", "2", "--quiet", "--limit", "400", "--introprior-mc", "4"])
    assert rc == 0
    res = json.loads((tmp_path / "t" / "results.json").read_text())
    game = res["records"]["8gaussians/1/sintro-sg"]
    # 320 training rows: 3 steps of 128 per epoch, so 1 epoch each of warm-up and game; the VAE 2
    assert game["steps"] == 6 and game["metrics"]["hist_kl"] > 0
    assert res["records"]["8gaussians/1/vae-sg"]["steps"] == 6


def test_torchrun_is_refused_with_the_reason(tmp_path):
    import types

    from xvae_fast.training.trainer import Trainer
    tr = Trainer(_cfg(tmp_path, "d", dataset="clusters", epochs_vae=1, epochs_game=1), verbose=False)
    tr.world = types.SimpleNamespace(distributed=True, size=2)
    with pytest.raises(ConfigError, match="does not train under torchrun yet: the game's"):
        tr._check_world()
